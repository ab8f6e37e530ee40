"""CLI command groups beyond the core (validate/plan/run/schema/init live in `cli.py`).

Each module exposes `register(app)`; heavy imports stay inside the command functions so
`clo-recipe --help` and `validate` start fast.
"""

COMMAND_MODULES = ("doctor", "results", "share", "recipes")
