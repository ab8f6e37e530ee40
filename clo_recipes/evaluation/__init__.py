"""Evaluation: language fidelity, multiple-choice knowledge, lm-evaluation-harness tasks,
pairwise LLM-judge win rates, and the report, plots and comparisons built from them.

Importing this package is light (no torch): heavy libraries load inside the functions that
need them.
"""
