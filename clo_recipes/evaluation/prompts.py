"""Evaluation prompts: the same questions in English and in the target language.

Two sources, one shape. `eval.prompts` is a JSONL file with an `en` field and a field named
by the target's ISO 639-1 code (`{"id": "q1", "en": "...", "th": "..."}`); by default the
held-out pairs of the run are used (`pairs/eval.jsonl`, fields `x_en` and `x_l`). Prompts
keep their id in both languages, so answers can be paired across models and languages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clo_recipes.files import read_jsonl
from clo_recipes.errors import StageError


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    lang: str  # ISO 639-1 code of the prompt's language
    text: str


def load_prompts_file(path: Path, target: str, max_per_language: int) -> list[EvalPrompt]:
    """Prompts from a user JSONL with `en` and `<target>` fields (either may be missing)."""
    if not path.is_file():
        raise StageError(f"evaluation prompts file not found: {path}", hint="check `eval.prompts` in the recipe")
    rows = []
    for index, row in enumerate(read_jsonl(path)):
        if "en" not in row and target not in row:
            raise StageError(
                f"{path}:{index + 1}: a prompt needs an `en` or `{target}` field, got {sorted(row)}",
                hint=f'one JSON object per line, e.g. {{"id": "q1", "en": "...", "{target}": "..."}}',
            )
        rows.append((str(row.get("id", f"p{index + 1:05d}")), row.get("en"), row.get(target)))
    return _cap(rows, target, max_per_language)


def load_heldout_prompts(eval_jsonl: Path, target: str, max_per_language: int) -> list[EvalPrompt]:
    """Prompts from the pairs stage's held-out quadruples (`x_en`, `x_l`)."""
    if not eval_jsonl.is_file():
        raise StageError(
            f"no held-out prompts at {eval_jsonl}",
            hint="set `eval.prompts` to a JSONL of prompts, or keep held-out samples in `data`",
        )
    rows = [(str(row["id"]), row.get("x_en"), row.get("x_l")) for row in read_jsonl(eval_jsonl)]
    return _cap(rows, target, max_per_language)


def _cap(rows: list[tuple[str, str | None, str | None]], target: str, limit: int) -> list[EvalPrompt]:
    """The first `limit` non-empty prompts per language, English first, in file order."""
    prompts: list[EvalPrompt] = []
    for lang, column in (("en", 1), (target, 2)):
        kept = [EvalPrompt(row[0], lang, row[column]) for row in rows if row[column] and row[column].strip()]
        prompts.extend(kept[:limit])
    if not prompts:
        raise StageError("no evaluation prompts: every prompt is empty")
    return prompts
