"""Stand-in stages for the share tests (lock, export, bundle seeding, model card).

Each kind writes the files of the stage contract from what the recipe gives it, without a
model: source samples the JSONL data by seed, translate looks texts up in the translation
memory, pairs builds the CLO quadruples, train writes a LoRA-shaped `model/` folder plus a
resume checkpoint, evaluate writes answers and fidelity metrics, and the report stage is
the real one. Every call is appended to $SHARE_STAGE_LOG. With $SHARE_STAGE_LEAK set, train
also writes a log line holding $HF_TOKEN, like a careless third-party callback would.
"""

import dataclasses
import json
import os
import random
from pathlib import Path

from clo_recipes.engine.context import read_jsonl, write_jsonl
from clo_recipes.evaluation.fidelity import fidelity_metrics

# Spanish answers out of four Spanish prompts, per evaluated model.
SPANISH_ANSWERS = {"base": 0, "sft": 2, "clo": 3}


def _source(ctx):
    data = ctx.recipe.data
    rows = list(read_jsonl(Path(data.source)))
    order = list(range(len(rows)))
    random.Random(data.seed).shuffle(order)
    held_out = order[: data.eval_samples]
    train = order[data.eval_samples:][: data.samples]
    as_sample = lambda i: {"id": f"s{i:04d}", "prompt": rows[i]["prompt"], "response": rows[i]["response"]}  # noqa: E731
    write_jsonl(ctx.work_dir / "samples.jsonl", [as_sample(i) for i in train])
    write_jsonl(ctx.work_dir / "eval_samples.jsonl", [as_sample(i) for i in held_out])
    return {"samples": len(train), "eval_samples": len(held_out)}


def _translate(ctx):
    code = ctx.recipe.language
    memory = {row["en"]: row[code] for row in read_jsonl(Path(ctx.recipe.translation.memory_file))}
    counts = {}
    for name, out in (("samples.jsonl", "translated.jsonl"), ("eval_samples.jsonl", "eval_translated.jsonl")):
        rows = [{**row, "prompt_l": memory.get(row["prompt"], f"[{code}] {row['prompt']}"),
                 "response_l": memory.get(row["response"], f"[{code}] {row['response']}")}
                for row in read_jsonl(ctx.input("source") / name)]
        write_jsonl(ctx.work_dir / out, rows)
        counts[out.split(".")[0]] = len(rows)
    write_jsonl(ctx.work_dir / "dropped.jsonl", [])
    return {**counts, "dropped": 0}


def _pairs(ctx):
    counts = {}
    for name, out in (("translated.jsonl", "train.jsonl"), ("eval_translated.jsonl", "eval.jsonl")):
        rows = [{"id": r["id"], "x_en": r["prompt"], "y_en": r["response"], "x_l": r["prompt_l"], "y_l": r["response_l"]}
                for r in read_jsonl(ctx.input("translate") / name)]
        write_jsonl(ctx.work_dir / out, rows)
        counts[out.split(".")[0]] = len(rows)
    return {"pairs": counts["train"], "eval_pairs": counts["eval"]}


def _reference(ctx):
    rows = [{"id": r["id"], "chosen": -1.5, "rejected": -2.5} for r in read_jsonl(ctx.input("pairs") / "train.jsonl")]
    write_jsonl(ctx.work_dir / "reference.jsonl", rows)
    return {"pairs": len(rows)}


def _train(ctx):
    model = ctx.work_dir / "model"
    model.mkdir(exist_ok=True)
    (model / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "arm": ctx.arm}))
    (model / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 8 + ctx.arm.encode())
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    (model / "README.md").write_text("PEFT's own model card stub\n")
    checkpoint = ctx.work_dir / "checkpoint-2"
    checkpoint.mkdir(exist_ok=True)
    (checkpoint / "optimizer.pt").write_bytes(b"\0" * 64)
    write_jsonl(ctx.work_dir / "metrics.jsonl", [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}])
    if os.environ.get("SHARE_STAGE_LEAK"):
        (ctx.work_dir / "train.log").write_text(f"logged in with {os.environ['HF_TOKEN']}\n")
    return {"steps": 2, "final_loss": 0.7}


def _evaluate(ctx):
    label = ctx.arm
    spanish = SPANISH_ANSWERS.get(label, 0)
    rows = []
    for index, row in enumerate(read_jsonl(ctx.input("pairs") / "eval.jsonl")):
        if index >= 4:
            break
        in_spanish = index < spanish
        rows.append({"id": row["id"], "lang": ctx.recipe.language, "prompt": row["x_l"], "answer": f"{label} {index}",
                     "answer_lang": ctx.recipe.language if in_spanish else "en", "answer_lang_confidence": 0.9})
        rows.append({"id": row["id"], "lang": "en", "prompt": row["x_en"], "answer": f"{label} {index}",
                     "answer_lang": "en", "answer_lang_confidence": 0.9})
    write_jsonl(ctx.work_dir / "answers.jsonl", rows)
    metrics = {"stage": "evaluate", "model": label, "weights": label, "language": ctx.recipe.language,
               "suites": {"fidelity": fidelity_metrics((r["lang"], r["answer_lang"]) for r in rows)}, "skipped": []}
    (ctx.work_dir / "metrics.json").write_text(json.dumps(metrics))
    return {"answers": len(rows)}


def _judge(ctx):
    (ctx.work_dir / "judge.json").write_text(json.dumps({"status": "skipped", "reason": "no judge in tests"}))
    return {"status": "skipped"}


def _report(ctx):
    from clo_recipes.stages import report

    return report.run(ctx)


def run(ctx):
    with open(os.environ["SHARE_STAGE_LOG"], "a") as handle:
        handle.write(ctx.stage_id + "\n")
    return {"source": _source, "translate": _translate, "pairs": _pairs, "reference": _reference,
            "train": _train, "evaluate": _evaluate, "judge": _judge, "report": _report}[ctx.kind](ctx)


# --------------------------------------------------------------------------- test helpers
ENGLISH = [("What is water?", "Water is a liquid."), ("Name a colour.", "Blue."), ("Count to two.", "One, two."),
           ("Where is Paris?", "In France."), ("Say hello.", "Hello!"), ("What is 2+2?", "Four."),
           ("Name a fruit.", "An apple."), ("Is ice cold?", "Yes."), ("Name a planet.", "Mars."),
           ("What do cats say?", "Meow.")]
SPANISH = {"What is water?": "¿Qué es el agua?", "Water is a liquid.": "El agua es un líquido.",
           "Say hello.": "Di hola.", "Hello!": "¡Hola!"}


def write_inputs(folder: Path) -> dict:
    """data.jsonl (10 English pairs), memory.jsonl (some Spanish) and a local model folder;
    returns the recipe fields that use them (merge over runner.testing.BASE_RECIPE)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "data.jsonl", [{"prompt": p, "response": r} for p, r in ENGLISH])
    write_jsonl(folder / "memory.jsonl", [{"en": en, "es": es} for en, es in SPANISH.items()])
    model = folder / "tiny-model"
    (model / "sub").mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "sub" / "weights.bin").write_bytes(b"\x01\x02\x03")
    return {"model": {"base": "./tiny-model"}, "data": {"source": "data.jsonl", "samples": 6, "eval_samples": 4},
            "method": {"name": "clo", "baselines": ["sft"]}}


def use_share_stages(monkeypatch, log: Path) -> Path:
    """Point every stage kind at this module; returns `log`, where the calls are listed."""
    from clo_recipes.engine import stages as stage_table

    for kind, spec in list(stage_table.SPECS.items()):
        monkeypatch.setitem(stage_table.SPECS, kind, dataclasses.replace(
            spec, module="share_stages", checks=()))  # the table's properties stay
    monkeypatch.setenv("SHARE_STAGE_LOG", str(log))
    return log


def calls(log: Path) -> list:
    return log.read_text().split() if log.exists() else []
