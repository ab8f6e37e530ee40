"""TRL's DPOTrainer on the same CLO rows, the baseline the GPU check compares the engine with:
each CLO sample is its two cross-lingual preference pairs (what the CLO loss compares), with
the same global batch, micro-batch, steps, attention-only fp32 trained weights and
checkpointing (sigmoid loss, precomputed reference)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from probes import DeviceMemory, parameter_bytes, release


def dpo_pairs(rows: list[dict]) -> list[dict]:
    """Each CLO sample as its two cross-lingual preference pairs (what the CLO loss compares)."""
    pairs = []
    for row in rows:
        for query, chosen, rejected in ((row["x_en"], row["y_en"], row["y_l"]), (row["x_l"], row["y_l"], row["y_en"])):
            pairs.append({"prompt": [{"role": "user", "content": query}],
                          "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}]})
    return pairs


def run_trl(folder: Path, rows: list[dict], args, setup: dict[str, Any], cuda: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from clo_recipes.training.scope import attention_modules

    tokenizer = AutoTokenizer.from_pretrained(folder)
    output = Path(tempfile.mkdtemp(prefix="trl-", dir=folder.parent))
    micro_rows = 2 * setup["micro_batch"]  # two pairs per CLO sample
    with DeviceMemory(cuda) as memory:
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation=setup["attention"])
        model.config.use_cache = False
        trained = set(attention_modules(model))
        for name, param in model.named_parameters():  # attention-only, fp32 master weights, as the engine
            train = name.rsplit(".", 1)[0] in trained
            param.requires_grad_(train)
            if train:
                param.data = param.data.float()
        config = DPOConfig(
            output_dir=str(output), per_device_train_batch_size=micro_rows,
            gradient_accumulation_steps=args.global_batch // setup["micro_batch"], max_steps=args.steps,
            learning_rate=8e-6, lr_scheduler_type="constant", warmup_steps=0, beta=0.1, loss_type=["sigmoid"],
            precompute_ref_log_probs=True, precompute_ref_batch_size=micro_rows, max_length=args.max_length,
            report_to="none", use_cpu=not cuda, bf16=True, save_strategy="no", logging_steps=1, disable_tqdm=True,
            dataloader_num_workers=0, seed=42, gradient_checkpointing=setup["checkpointing"],
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        stored = parameter_bytes(model)
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(dpo_pairs(rows)),
                             processing_class=tokenizer)
        setup_seconds = time.perf_counter() - started
        if not hasattr(trainer, "_total_train_tokens"):
            raise RuntimeError("this TRL version does not count trained tokens (_total_train_tokens)")

        class StepClock(TrainerCallback):
            def __init__(self):
                self.seconds, self.tokens = [], []

            def on_step_begin(self, *_, **__):
                if cuda:
                    torch.cuda.synchronize()
                self.begun, self.before = time.perf_counter(), trainer._total_train_tokens

            def on_step_end(self, *_, **__):
                if cuda:
                    torch.cuda.synchronize()
                self.seconds.append(time.perf_counter() - self.begun)
                self.tokens.append(trainer._total_train_tokens - self.before)

        clock = StepClock()
        trainer.add_callback(clock)
        with contextlib.redirect_stdout(sys.stderr):  # its per-step log dicts; stdout keeps the summary
            trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    tokens, seconds = sum(clock.tokens[1:]), sum(clock.seconds[1:])
    result = {"tokens_per_second": tokens / seconds, "timed_steps": len(clock.seconds) - 1, "timed_tokens": tokens,
              "seconds_per_step": seconds / (len(clock.seconds) - 1), "first_loss": losses[0] if losses else None,
              "first_preference_loss": losses[0] if losses else None,
              "setup_seconds": setup_seconds, "parameter_bytes_by_dtype": stored, "memory": memory.record()}
    trainer.accelerator.free_memory()
    del trainer, model
    shutil.rmtree(output, ignore_errors=True)
    release()
    return result
