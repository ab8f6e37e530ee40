"""Self-contained HTML report pages (run, comparison, sweep): inline CSS and SVG, no network."""
