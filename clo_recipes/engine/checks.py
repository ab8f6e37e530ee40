"""Validation's second step for what the stages need: run each planned stage's cross-checks
(named in the stage table) against the resolved recipe, and report every problem at once at
the field it is about. Imported by `plan`; never imports torch (the checked modules are
torch-free, like the stage table promises)."""

from __future__ import annotations

import importlib
from typing import Iterable

from ..errors import Problem, RecipeError
from ..recipe.resolve import Resolved, problems_from
from .stages import SPECS


def _function(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def check_stages(resolved: Resolved, kinds: Iterable[str]) -> None:
    """Raise one RecipeError listing every problem the planned stage kinds find."""
    problems: list[Problem] = []
    # each check once, in plan order (reference and train share the 4-bit backend check)
    checks = dict.fromkeys(check for kind in dict.fromkeys(kinds) for check in SPECS[kind].checks)
    for field, target in checks:
        check = _function(target)
        location = resolved.source.location(tuple(field.split(".")))
        problems += problems_from(lambda: check(resolved.recipe), location)
    if problems:
        raise RecipeError(problems=problems)
