"""A complete tiny CLO project, written to a folder: what `clo-recipe doctor --smoke` runs.

Sixteen hand-written English instruction pairs with their Spanish translations (served by the
`memory` translation backend, so nothing is downloaded), a tiny random Llama with a tokenizer
trained on the fly, and a recipe that runs every stage on the local device in about a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

# (English query, English answer, Spanish query, Spanish answer)
SMOKE_PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.",
     "¿Cuál es la capital de Francia?", "La capital de Francia es París."),
    ("How do I boil an egg?", "Put the egg in boiling water for eight minutes.",
     "¿Cómo hiervo un huevo?", "Pon el huevo en agua hirviendo durante ocho minutos."),
    ("Where does the cat sit?", "The cat sits on the mat.",
     "¿Dónde se sienta el gato?", "El gato se sienta en la alfombra."),
    ("Where does the dog run?", "The dog runs in the park.",
     "¿Dónde corre el perro?", "El perro corre en el parque."),
    ("At what temperature does water boil?", "Water boils at one hundred degrees.",
     "¿A qué temperatura hierve el agua?", "El agua hierve a cien grados."),
    ("How do I say thank you?", "You say thank you very much.",
     "¿Cómo digo gracias?", "Se dice muchas gracias."),
    ("How do I greet someone in the morning?", "You say good morning.",
     "¿Cómo saludo a alguien por la mañana?", "Se dice buenos días."),
    ("What color is the sky?", "The sky is blue on a clear day.",
     "¿De qué color es el cielo?", "El cielo es azul en un día despejado."),
    ("How many days are in a week?", "A week has seven days.",
     "¿Cuántos días tiene una semana?", "Una semana tiene siete días."),
    ("What do cows drink?", "Cows drink water.",
     "¿Qué beben las vacas?", "Las vacas beben agua."),
    ("When do people sleep?", "Most people sleep at night.",
     "¿Cuándo duermen las personas?", "La mayoría de las personas duermen de noche."),
    ("What is bread made from?", "Bread is made from flour, water and salt.",
     "¿De qué está hecho el pan?", "El pan está hecho de harina, agua y sal."),
    ("How many legs does a spider have?", "A spider has eight legs.",
     "¿Cuántas patas tiene una araña?", "Una araña tiene ocho patas."),
    ("What falls from clouds?", "Rain falls from the clouds.",
     "¿Qué cae de las nubes?", "La lluvia cae de las nubes."),
    ("Which season is the coldest?", "Winter is the coldest season.",
     "¿Cuál es la estación más fría?", "El invierno es la estación más fría."),
    ("What do bees make?", "Bees make honey.",
     "¿Qué hacen las abejas?", "Las abejas hacen miel."),
]


def smoke_recipe(folder: Path, *, steps: int, hardware: str) -> dict:
    return {
        "name": "smoke",
        "output_dir": str(folder / "runs"),
        "cache_dir": str(folder / "cache"),
        "model": {"base": "./tiny-model"},
        "language": "es",
        "data": {"source": "data.jsonl", "format": "pairs", "samples": 12, "eval_samples": 4},
        "translation": {"backend": "memory", "memory_file": "memory.jsonl"},
        "method": {"name": "clo"},
        "adapter": {"kind": "full", "trainable": "attention"},
        "train": {"max_steps": steps, "learning_rate": 3.0e-3, "warmup_ratio": 0.1, "global_batch_size": 4,
                  "max_length": 96, "save_steps": max(1, steps // 2)},
        "eval": {"suites": ["fidelity"], "max_prompts": 4, "max_new_tokens": 8, "batch_size": 4},
        "hardware": hardware,
    }


def write_smoke_project(folder: Path, *, steps: int = 12, hardware: str = "auto") -> Path:
    """Write model, data, translation memory and recipe into `folder`; returns the recipe path."""
    from clo_recipes.testing.tiny import build_tiny_llama

    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_llama(folder / "tiny-model")
    with open(folder / "data.jsonl", "w", encoding="utf-8") as data, \
            open(folder / "memory.jsonl", "w", encoding="utf-8") as memory:
        for index, (x_en, y_en, x_es, y_es) in enumerate(SMOKE_PAIRS):
            data.write(json.dumps({"id": f"smoke-{index:02d}", "prompt": x_en, "response": y_en}) + "\n")
            memory.write(json.dumps({"en": x_en, "es": x_es}, ensure_ascii=False) + "\n")
            memory.write(json.dumps({"en": y_en, "es": y_es}, ensure_ascii=False) + "\n")
    recipe = folder / "smoke.yaml"
    recipe.write_text("# clo-recipe run smoke.yaml  (written by clo-recipe doctor --smoke)\n"
                      + yaml.safe_dump(smoke_recipe(folder.resolve(), steps=steps, hardware=hardware), sort_keys=False,
                                       allow_unicode=True), encoding="utf-8")
    return recipe
