"""Tiny, locally built models for tests, `doctor --smoke` and benchmarks (no hub access)."""
