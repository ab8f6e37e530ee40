"""The training loop: plain Python over accelerate, the same code on CPU, one GPU or many.

One optimizer step = `train.global_batch_size` samples (a CLO sample = its two preference
pairs, both always in the same micro-batch), split into length-sorted micro-batches of
`hardware.micro_batch_size` per process. Every loss of a step is a mean over the whole step
(pairs, answer tokens), so gradients do not depend on the micro-batch / accumulation / process
split. Frozen reference log-probs are precomputed; no second model is held.

`sft+dpo` runs two phases in one stage: SFT, then DPO on the same cross-lingual pairs with the
SFT model as reference (its log-probs computed between the phases and stored in the stage).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CloError, StageError
from ..files import JsonlAppender, read_jsonl, write_jsonl
from ..hardware.precision import mixed_precision
from ..methods.dpo import average_metric_sums
from ..methods.output import LossOutput
from .batch import collate, forward_logps
from .chat import ChatRenderer
from .checkpoint import CheckpointStore, identity_hash, trainable_parameters
from .data import Example, build_examples, iterate_steps, steps_per_epoch, total_steps
from .loading import load_model, load_tokenizer, quantization_config
from .objectives import Objective, objective_for, phases_of
from .reference import attach_reference, compute_reference, write_reference
from .scope import apply_adapter
from .streaming import choose_path
from .trackers import flat_config, tracker_names



@dataclass
class TrainJob:
    """Everything one arm's training needs; the train stage builds it from the recipe."""

    arm: str  # clo | sft | sft+dpo
    model: Any  # recipe sections
    method: Any
    adapter: Any
    train: Any
    hardware: Any
    rows: list[dict]  # {"id", "x_en", "y_en", "x_l", "y_l"}
    work_dir: Path
    identity: dict[str, Any]  # recipe values training depends on: checkpoint identity and tracker config
    reference_file: Path | None = None  # precomputed reference log-probs (arm clo)
    project: str = "clo-recipes"
    show_progress: bool = True


def check_environment(job: TrainJob) -> list[str]:
    """Refuse what cannot work before anything is loaded; returns the tracker names."""
    if job.adapter.kind == "qlora" and job.hardware.quantization != "nf4":
        raise CloError("adapter.kind qlora trains LoRA on a 4-bit base; hardware.quantization must be nf4")
    quantization_config(job.hardware.quantization, job.hardware.precision)  # bitsandbytes for NF4
    if job.hardware.optimizer != "adamw_torch":
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise CloError(f"hardware.optimizer {job.hardware.optimizer} needs the bitsandbytes package",
                           hint="pip install bitsandbytes, or use optimizer: adamw_torch")
    return tracker_names(job.train.report_to)


def build_optimizer(named_params: list[tuple[str, Any]], kind: str, lr: float, weight_decay: float) -> Any:
    """AdamW over the trainable weights; biases and norms get no weight decay."""
    import torch

    decay = [p for _, p in named_params if p.ndim >= 2]
    no_decay = [p for _, p in named_params if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    if kind == "adamw_torch":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if kind == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: Any, name: str, warmup_ratio: float, steps: int) -> Any:
    from transformers import get_scheduler

    kind = "constant_with_warmup" if name == "constant" else name
    return get_scheduler(kind, optimizer, num_warmup_steps=math.ceil(warmup_ratio * steps), num_training_steps=steps)


class StepTotals:
    """Sums over the micro-batches of one step (and, after `reduce`, over processes)."""

    def __init__(self):
        self.sums: dict[str, float] = {}

    def add(self, out: LossOutput, tokens: int) -> None:
        values = {"loss": out.loss.item(), "tokens": float(tokens)}
        values.update({name: value.item() for name, value in out.components.items()})
        for prefix, terms in out.pairs.items():
            values.update(terms.metric_sums(f"{prefix}/"))
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def reduce(self, accelerator: Any) -> dict[str, float]:
        import torch

        keys = sorted(self.sums)
        values = torch.tensor([self.sums[k] for k in keys], dtype=torch.float64, device=accelerator.device)
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, reduction="sum")
        sums = dict(zip(keys, values.tolist()))
        metrics = {key: sums[key] for key in ("loss", "nll", "preference", "tokens") if key in sums}
        for prefix in ("en/", "target/"):
            metrics.update(average_metric_sums({k: v for k, v in sums.items() if k.startswith(prefix)}, prefix))
        return metrics


class Trainer:
    def __init__(self, job: TrainJob):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.job = job
        trackers = check_environment(job)
        self.accelerator = Accelerator(mixed_precision=mixed_precision(job.hardware.precision), log_with=trackers or None,
                                       project_dir=str(job.work_dir / "trackers"))
        self.trackers = trackers
        self._check_sharding()
        self.first_step_shards: list[list[str]] | None = None
        set_seed(job.train.seed)
        self.phases = phases_of(job.arm)
        self.work_dir = job.work_dir
        self.metrics_file = job.work_dir / "metrics.jsonl"
        self.checkpoints = CheckpointStore(job.work_dir / "checkpoints", identity_hash(job.identity), self.phases)

    def _check_sharding(self) -> None:
        """Never train a different mode than the recipe asks: accelerate turns its FSDP plugin
        on only for accelerator devices, so CPU processes would silently run plain DDP."""
        sharding = self.job.hardware.sharding
        kind = self.accelerator.distributed_type.name
        if sharding == "fsdp" and self.accelerator.num_processes > 1 and kind != "FSDP":
            raise CloError(f"hardware.sharding: fsdp, but accelerate runs these {self.accelerator.num_processes} "
                           f"processes as {kind}: its FSDP plugin (FSDP1 and FSDP2) is enabled only on GPUs "
                           "(and other accelerators), not on CPU processes",
                           hint="on CPU use hardware.sharding: none (DDP over gloo); FSDP on GPUs")

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    # ---- setup -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        job = self.job
        self.tokenizer = load_tokenizer(job.model)
        self.pad_id = self.tokenizer.pad_token_id
        renderer = ChatRenderer(self.tokenizer)
        first = job.rows[0] if job.rows else None
        if first is None:
            raise CloError("the training set is empty", hint="check the pairs stage output (train.jsonl)")
        self.chat_check = renderer.check(first["x_l"], first["y_l"])
        names = tuple(dict.fromkeys(n for phase in self.phases for n in objective_for(phase, job.method).names))
        self.example_set = build_examples(job.rows, renderer, names, job.train.max_length)
        self.examples: list[Example] = self.example_set.examples
        if self.main:
            (self.work_dir / "chat_check.json").write_text(json.dumps(self.chat_check, indent=1, ensure_ascii=False))

    def prepare_model(self) -> None:
        import torch

        job, hardware = self.job, self.job.hardware
        model = load_model(job.model, precision=hardware.precision, attention=hardware.attention,
                           quantization=hardware.quantization, for_training=True)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.pad_id
        self.load_dtype = model.dtype
        model, self.scope = apply_adapter(model, job.adapter, gradient_checkpointing=hardware.gradient_checkpointing)
        for _, param in trainable_parameters(model):
            if param.dtype in (torch.float16, torch.bfloat16):  # fp32 master weights; compute runs under autocast
                param.data = param.data.float()
        self.trainable_count = sum(p.numel() for _, p in trainable_parameters(model))
        self.total_count = sum(p.numel() for p in model.parameters())
        with self.accelerator.autocast():  # a no-grad probe on the bare model, before DDP/FSDP wrap it; under
            self.logps_path = choose_path(model)  # autocast, as training runs: fp32 trained weights, bf16 rest
        self.model = self.accelerator.prepare(model)

    # ---- one phase ---------------------------------------------------------------------

    def reference_for(self, objective: Objective) -> None:
        """Attach reference log-probs: the reference stage's (clo) or the SFT model's (dpo phase)."""
        if not objective.needs_reference:
            return
        if objective.name == "clo":
            if self.job.reference_file is None:
                raise CloError("CLO training needs the reference stage's log-probs")
            attach_reference(self.examples, self.job.reference_file)
            return
        path = self.work_dir / "reference-dpo.jsonl"
        if not path.is_file():
            progress = self._progress(len(self.examples), "reference (SFT model)", unit="sample")
            logps = compute_reference(self.model, self.examples, objective.names, pad_id=self.pad_id,
                                      device=self.accelerator.device, autocast=self.accelerator.autocast,
                                      progress=progress)
            progress.close()
            if self.main:
                write_reference(path, self.examples, logps)  # atomic
            self.accelerator.wait_for_everyone()
        attach_reference(self.examples, path)

    def run_phase(self, phase: str, resume_from: Any) -> None:

        job, accelerator = self.job, self.accelerator
        objective = objective_for(phase, job.method)
        world, rank = accelerator.num_processes, accelerator.process_index
        steps = total_steps(len(self.examples), epochs=job.train.epochs, max_steps=job.train.max_steps,
                            global_batch=job.train.global_batch_size, world_size=world)
        per_epoch = steps_per_epoch(len(self.examples), job.train.global_batch_size, world)
        if resume_from is not None and resume_from.phase_done:
            return
        self.reference_for(objective)
        params = trainable_parameters(accelerator.unwrap_model(self.model))
        optimizer = accelerator.prepare(build_optimizer(params, job.hardware.optimizer,
                                                        job.train.learning_rate, job.train.weight_decay))
        scheduler = build_scheduler(optimizer, job.train.scheduler, job.train.warmup_ratio, steps)
        start = 0
        if resume_from is not None:
            CheckpointStore.load_training_state(resume_from, accelerator, optimizer, scheduler)
            start = resume_from.step
        self.model.train()
        lengths = [example.length for example in self.examples]
        # Several forward passes per micro-batch cut padding; distributed wrappers expect one.
        chunks = 1 if world > 1 else 4
        progress = self._progress(steps, f"train {job.arm}" + (f" ({phase})" if len(self.phases) > 1 else ""),
                                  initial=start)
        last_saved = resume_from.path.name if resume_from is not None else None
        for step, plan in iterate_steps(lengths, total=steps, seed=job.train.seed, global_batch=job.train.global_batch_size,
                                        micro_batch=job.hardware.micro_batch_size, world_size=world, rank=rank,
                                        start=start):
            started = time.perf_counter()
            if self.first_step_shards is None:
                self.first_step_shards = self._shards(plan)
            denominators = objective.denominators([self.examples[i] for i in plan.examples])
            totals = StepTotals()
            for index, micro in enumerate(plan.micro_batches):
                batch = collate([self.examples[i] for i in micro], objective.names, self.pad_id,
                                with_reference=objective.needs_reference, max_chunks=chunks).to(accelerator.device)
                last = index == len(plan.micro_batches) - 1
                with nullcontext() if last else accelerator.no_sync(self.model):
                    with accelerator.autocast():
                        logps = forward_logps(self.model, batch)
                        out = objective.loss(logps, batch.reference_logps() if objective.needs_reference else None,
                                             denominators)
                    # Processes average gradients; the step-level denominators already average.
                    accelerator.backward(out.loss * world)
                totals.add(out, batch.tokens)
            metrics = totals.reduce(accelerator)
            grad_norm = accelerator.clip_grad_norm_([p for _, p in params], job.train.max_grad_norm)
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            if not math.isfinite(metrics["loss"]) or not math.isfinite(grad_norm):
                what = f"loss {metrics['loss']}" if not math.isfinite(metrics["loss"]) else f"gradient norm {grad_norm}"
                kept = f"the last good checkpoint {last_saved} is kept in {self.checkpoints.folder}" if last_saved \
                    else "no checkpoint was saved yet"
                raise StageError(f"training stopped: {what} at {phase} step {step + 1}; {kept}",
                                 hint="lower train.learning_rate, use bf16 instead of fp16, or check the data")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            done = step + 1
            metrics.update({"phase": phase, "step": done, "epoch": round(done / per_epoch, 4),
                            "learning_rate": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                            "tokens_per_second": metrics["tokens"] / seconds, "seconds": seconds})
            if done % job.train.logging_steps == 0 or done in (1, steps):
                self._log(metrics, tracker_step=self.phases.index(phase) * steps + done)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_second']:.0f}")
            progress.update(1)
            final_of_phase = done == steps
            if done % job.train.save_steps == 0 or (final_of_phase and phase != self.phases[-1]):
                last_saved = self.checkpoints.save(accelerator, self.model, optimizer, scheduler, phase=phase,
                                                   step=done, phase_steps=steps).name
        progress.close()

    # ---- output ------------------------------------------------------------------------

    def save_model(self) -> Path:
        model_dir = self.work_dir / "model"
        unwrapped = self.accelerator.unwrap_model(self.model)
        lora = self.job.adapter.kind in ("lora", "qlora")
        if not lora:
            for _, param in trainable_parameters(unwrapped):  # back to the dtype it was loaded in
                param.data = param.data.to(self.load_dtype)
        state_dict = self.accelerator.get_state_dict(self.model)
        if self.main:
            shutil.rmtree(model_dir, ignore_errors=True)
            unwrapped.save_pretrained(model_dir, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(model_dir)
            if lora and self.job.train.merge:
                self._save_merged(model_dir)
        self.accelerator.wait_for_everyone()
        return model_dir

    def _save_merged(self, adapter_dir: Path) -> None:
        """LoRA merged into full weights (`merged/`), from an unquantized base in the load dtype."""
        from peft import PeftModel

        base = load_model(self.job.model, precision=self.job.hardware.precision, attention=None, quantization="none", for_training=True)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        target = self.work_dir / "merged"
        shutil.rmtree(target, ignore_errors=True)
        merged.save_pretrained(target, safe_serialization=True)
        self.tokenizer.save_pretrained(target)

    # ---- helpers -----------------------------------------------------------------------

    def _shards(self, plan: Any) -> list[list[str]]:
        """The sample ids each process trains on in one step (recorded for the first step run)."""
        mine = [self.examples[i].id for micro in plan.micro_batches for i in micro]
        if self.accelerator.num_processes == 1:
            return [mine]
        from accelerate.utils import gather_object

        return [list(part) for part in gather_object([mine])]

    def _progress(self, total: int, desc: str, *, initial: int = 0, unit: str = "step") -> Any:
        from ..progress import progress_bar

        return progress_bar(total, desc, unit=unit, initial=initial, enabled=self.main and self.job.show_progress)

    def _log(self, metrics: dict[str, Any], tracker_step: int) -> None:
        """A metrics.jsonl line; trackers count steps across phases (sft+dpo: DPO continues)."""
        if self.main:
            with JsonlAppender(self.metrics_file) as log:  # cuts a line torn by a kill first
                log.write(metrics)
        if self.trackers:
            numbers = {f"{metrics['phase']}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
            self.accelerator.log(numbers, step=tracker_step)

    def _trim_metrics(self, resume_from: Any) -> None:
        """Keep metric lines up to the checkpoint being resumed (later ones will be redone)."""
        if not self.main or not self.metrics_file.exists():
            return
        keep = []
        if resume_from is not None:
            limit = (self.phases.index(resume_from.phase), resume_from.step)
            keep = [row for row in read_jsonl(self.metrics_file, torn_tail_ok=True)
                    if (self.phases.index(row["phase"]), row["step"]) <= limit]
        write_jsonl(self.metrics_file, keep)

    # ---- the whole run -----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.prepare_data()
        resume_from = self.checkpoints.latest()
        self.prepare_model()
        if resume_from is not None:
            CheckpointStore.load_weights(resume_from, self.accelerator, self.model)
        self._trim_metrics(resume_from)
        if self.trackers:
            self.accelerator.init_trackers(self.job.project, config=flat_config(self.job.identity))
        resumed = resume_from.path.name if resume_from is not None else None
        for phase in self.phases:
            if resume_from is not None and self.phases.index(phase) < self.phases.index(resume_from.phase):
                continue  # finished before the checkpoint; its weights are already loaded
            self.run_phase(phase, resume_from if resume_from is not None and resume_from.phase == phase else None)
        model_dir = self.save_model()
        if self.trackers:
            self.accelerator.end_training()
        if self.main:
            shutil.rmtree(self.checkpoints.folder, ignore_errors=True)  # model/ holds the result now
        return self.outputs(model_dir, resumed)

    def outputs(self, model_dir: Path, resumed: str | None) -> dict[str, Any]:
        """Counts and the loss at the first and last step of each phase (from metrics.jsonl,
        so a resumed run reports its whole history)."""
        result: dict[str, Any] = {
            "arm": self.job.arm,
            "samples": len(self.examples),
            "dropped_too_long": self.example_set.dropped_too_long,
            "trainable": self.scope.description,
            "log_probs": self.logps_path.reason,
            "trainable_parameters": self.trainable_count,
            "total_parameters": self.total_count,
            "processes": self.accelerator.num_processes,
            "distributed": self.accelerator.distributed_type.name,  # NO, MULTI_CPU/MULTI_GPU (DDP), FSDP, DEEPSPEED
            "resumed_from": resumed,
            "first_step_samples_per_process": self.first_step_shards,  # disjoint: each rank its own shard
            "model_dir": model_dir.name,
        }
        rows = list(read_jsonl(self.metrics_file)) if self.metrics_file.exists() else []
        for phase in self.phases:
            logged = [row for row in rows if row["phase"] == phase]
            if not logged:
                continue
            prefix = "" if len(self.phases) == 1 else f"{phase}_"
            result[f"{prefix}steps"] = logged[-1]["step"]
            result[f"{prefix}first_loss"] = logged[0]["loss"]
            result[f"{prefix}last_loss"] = logged[-1]["loss"]
            for key in ("target/reward_margin", "target/reward_accuracy", "en/reward_margin", "en/reward_accuracy"):
                if key in logged[-1]:
                    result[f"{prefix}final_{key.replace('/', '_')}"] = logged[-1][key]
        return result


def run_training(job: TrainJob) -> dict[str, Any]:
    """Train one arm end to end (resuming from the newest checkpoint in `job.work_dir`)."""
    return Trainer(job).run()
