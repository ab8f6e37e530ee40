"""Stage contexts for the evaluation tests."""

from pathlib import Path

from clo_recipes.runner.testing import make_context as engine_make_context


def make_context(recipe: dict, stage_id: str, tmp_path: Path, inputs: dict[str, Path] | None = None):
    """`runner.testing.make_context` with the translation memory the base recipe names (the
    resolver checks it exists and covers the target language, Spanish unless the recipe says)."""
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)
    memory = tmp_path / "memory.jsonl"
    if not memory.exists():
        memory.write_text(json.dumps({"en": "Hello", recipe.get("language", "es"): "Hola"}) + "\n", encoding="utf-8")
    return engine_make_context(recipe, stage_id, tmp_path, inputs)
