"""User-facing errors. The CLI prints these as one short screen, never as a traceback."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Location:
    """Where in a recipe a problem is: file, 1-based line and column, dotted field path."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file or "<recipe>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.field}" if self.field else where


@dataclass
class Problem:
    message: str
    location: Location | None = None
    hint: str | None = None

    def render(self) -> str:
        head = f"{self.location}: {self.message}" if self.location else self.message
        return head + (f"\n    hint: {self.hint}" if self.hint else "")


class CloError(Exception):
    """An error the user can fix: bad recipe, missing file, unsupported setting, ...

    Carries one or more `Problem`s so all problems of a file are reported at once.
    """

    def __init__(self, message: str | None = None, *, hint: str | None = None,
                 problems: list[Problem] | None = None, location: Location | None = None):
        self.problems = list(problems or [])
        if message is not None:
            self.problems.insert(0, Problem(message, location, hint))
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(problem.render() for problem in self.problems)


class RecipeError(CloError):
    """The recipe itself is wrong (syntax, schema, references)."""


class StageError(CloError):
    """A stage cannot proceed with what it was given (empty data, unsupported model, ...)."""
