"""Shared data for the training tests: a tiny model and CLO quadruples it can learn quickly."""

from __future__ import annotations

import json
from pathlib import Path

from clo_recipes.engine.context import write_jsonl

EN = ["The cat sits on the mat.", "The dog runs in the park.", "Water boils at one hundred degrees.",
      "Thank you very much.", "Good morning.", "Put the egg in boiling water."]
ES = ["El gato está sobre la alfombra.", "El perro corre en el parque.", "El agua hierve a cien grados.",
      "Muchas gracias.", "Buenos días.", "Pon el huevo en agua hirviendo."]


def quadruples(count: int = 16) -> list[dict]:
    return [{"id": f"s{i:03d}", "x_en": f"Say: {EN[i % 6]}", "y_en": EN[(i + 1) % 6],
             "x_l": f"Di: {ES[i % 6]}", "y_l": ES[(i + 1) % 6]} for i in range(count)]


def pairs_dir(folder: Path, rows: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", quadruples() if rows is None else rows)
    return folder


def prepare_recipe_dir(folder: Path) -> None:
    """The files `make_context`'s base recipe points at (English data, an es translation memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("", encoding="utf-8")
    (folder / "memory.jsonl").write_text(json.dumps({"en": EN[0], "es": ES[0]}) + "\n", encoding="utf-8")


def training_recipe(model: Path, method: str = "clo", **train) -> dict:
    settings = {"max_steps": 8, "learning_rate": 3e-3, "global_batch_size": 8, "max_length": 64,
                "save_steps": 4, "warmup_ratio": 0.0, **train}
    return {"model": {"base": str(model)}, "method": {"name": method}, "train": settings,
            "hardware": {"profile": "cpu", "micro_batch_size": 4}}
