"""Validation's second step for what the stages need: run each planned stage's cross-checks
(named in the stage table) against the resolved recipe, and report every problem at once at
the field it is about. Imported by `plan`; never imports torch (the checked modules are
torch-free, like the stage table promises)."""

from __future__ import annotations

from typing import Iterable

from ..errors import Problem, RecipeError
from ..recipe.backends import load_function
from ..recipe.resolve import Resolved, problems_from
from .stages import SPECS


def check_stages(resolved: Resolved, kinds: Iterable[str]) -> list[str]:
    """Raise one RecipeError listing every problem the planned stage kinds find; else return
    the notes the checks made (a check returns a string, or None, for what the plan should
    say without refusing: e.g. an adapter the server cannot load is merged instead)."""
    problems: list[Problem] = []
    notes: list[str] = []
    # each check once, in plan order (reference and train share the 4-bit backend check)
    checks = dict.fromkeys(check for kind in dict.fromkeys(kinds) for check in SPECS[kind].checks)
    for field, target in checks:
        check = load_function(target)
        location = resolved.source.location(tuple(field.split(".")))
        said: list = []
        problems += problems_from(lambda: said.append(check(resolved.recipe)), location)
        notes += [f"{field}: {note}" for note in said if note]
    if problems:
        raise RecipeError(problems=problems)
    return notes
