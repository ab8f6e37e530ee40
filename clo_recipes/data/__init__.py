"""English SFT data: read a source (hub dataset or local file), convert its format to
single-turn samples, clean them and draw nested, seeded train and held-out sets."""
