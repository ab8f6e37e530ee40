"""Recipe language: schema, loading (YAML + line map + extends + overrides), resolution."""
