"""Stage `reference` (arm clo): the frozen starting model's log-probs for every training pair.

Computed once, before training, in a no-grad pass over length-sorted batches, with the same
precision, attention kernel and quantization as training (with LoRA/QLoRA the reference is
the base model, i.e. the policy with its adapters disabled). Writes `reference.jsonl`
(format: `clo_recipes.training.reference`, in data order) and `chat_check.json`; the train
stage reads the former and so holds no second model. On several processes (GPUs, or
`hardware.num_processes` on CPU) each scores a disjoint share and rank 0 writes the file.
"""

from __future__ import annotations

import time

from clo_recipes.engine.context import StageContext, read_jsonl
from clo_recipes.hardware.precision import mixed_precision


def run(ctx: StageContext) -> dict:
    import json

    from accelerate import Accelerator

    from clo_recipes.progress import progress_bar
    from clo_recipes.training.chat import ChatRenderer
    from clo_recipes.training.data import PREFERENCE_SEQUENCES, build_examples
    from clo_recipes.training.gguf_cache import plain_model_section
    from clo_recipes.training.loading import load_model, load_tokenizer
    from clo_recipes.training.reference import REFERENCE_FILE, compute_reference, write_reference
    from clo_recipes.training.streaming import choose_path

    recipe = ctx.recipe
    hardware = recipe.hardware
    rows = list(read_jsonl(ctx.input("pairs") / "train.jsonl"))
    model_section = plain_model_section(recipe.model, ctx.cache_dir)  # a GGUF converts once
    tokenizer = load_tokenizer(model_section)
    renderer = ChatRenderer(tokenizer)
    check = renderer.check(rows[0]["x_l"], rows[0]["y_l"]) if rows else None
    example_set = build_examples(rows, renderer, PREFERENCE_SEQUENCES, recipe.train.max_length)
    accelerator = Accelerator(mixed_precision=mixed_precision(hardware.precision))
    model = load_model(model_section, precision=hardware.precision, attention=hardware.attention,
                       quantization=hardware.quantization, for_training=True)
    if hardware.quantization == "none":  # a 4-bit base was loaded onto its device already
        model = model.to(accelerator.device)
    path = choose_path(model, accelerator.autocast)
    started = time.perf_counter()
    bar = progress_bar(len(example_set.examples), f"reference {ctx.arm}", unit="sample",
                       enabled=accelerator.is_main_process and ctx.show_progress)
    shares: list[int] = []
    logps = compute_reference(model, example_set.examples, PREFERENCE_SEQUENCES, pad_id=tokenizer.pad_token_id,
                              device=accelerator.device, autocast=accelerator.autocast, progress=bar, shares=shares)
    bar.close()
    seconds = time.perf_counter() - started
    if accelerator.is_main_process:
        write_reference(ctx.work_dir / REFERENCE_FILE, example_set.examples, logps)
        (ctx.work_dir / "chat_check.json").write_text(json.dumps(check, indent=1, ensure_ascii=False))
    means = {name: sum(v[name] for v in logps.values()) / len(logps) for name in PREFERENCE_SEQUENCES}
    return {
        "samples": len(example_set.examples),
        "dropped_too_long": example_set.dropped_too_long,
        "mean_logps": {name: round(value, 4) for name, value in means.items()},
        "processes": accelerator.num_processes,
        "samples_per_process": shares,  # each sample scored once, by one process
        "seconds": round(seconds, 2),
        "log_probs": path.reason,
    }
