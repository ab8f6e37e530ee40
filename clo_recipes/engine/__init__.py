"""The staged engine: plan (stage graph + fingerprints), store (run dirs), run."""
