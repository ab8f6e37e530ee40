"""Reuse finished stages across the runs of a sweep, so a sweep costs about its training runs.

Two kinds of reuse, both giving the stage folder an independent run would have written:

- Same fingerprint: a stage whose folder (`<id>-<fp>`) is finished in another run directory of
  the sweep read exactly the same recipe values and inputs, so its files are linked over
  (the data stages of `clo` and `sft` points with the same sample count, `evaluate-base`).
- Nested samples: sampling is nested (`data/selection.py`: the first n of a seed's order), so
  the run with n samples is a slice of the run with the sweep's largest n (the donor), when
  everything but `data.samples` is equal:
  - `source`: the first n lines of `samples.jsonl`; the held-out set does not depend on n;
  - `translate`: the rows of the n kept samples (translation and filters are per sample,
    and the shared translation cache returns the same text an independent run would get);
  - `reference`: the rows of the n training pairs (per-sample log-probs of the same frozen
    model on the same sequences; batch composition differs only by float rounding);
  - `evaluate-base`: the untrained model on the same held-out pairs (checked equal).
  `pairs` is not sliced: it runs (cheaply) on the sliced translation, so its token
  statistics are its own.

A derived folder's manifest says what it came from (`derived`). Slices are checked (the
smaller run's rows must be the donor's rows), and anything that does not check out is left
for the engine to run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from .context import read_jsonl, write_jsonl
from .manifest import stage_manifest
from .plan import Plan, PlannedStage
from .stages import REFERENCE_FILE
from .store import MANIFEST


def _link_tree(source: Path, target: Path, skip: set[str] = frozenset()) -> None:
    """Hard-link (or copy, across file systems) every file except `skip` and the manifest."""
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if path.is_dir() or relative.parts[0] in skip or relative.name == MANIFEST:
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.unlink(missing_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


def _outputs(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("outputs", {})


def _ids(path: Path) -> list[str]:
    return [row["id"] for row in read_jsonl(path)]


# Each deriver fills `work` from the donor's finished folder and returns the manifest outputs,
# or None when the slice does not check out (the engine then runs the stage).
def _source(plan: Plan, stage: PlannedStage, donor: Path, work: Path) -> dict | None:
    wanted = plan.resolved.recipe.data.samples
    _link_tree(donor, work, skip={"samples.jsonl"})
    rows = list(read_jsonl(donor / "samples.jsonl"))[:wanted]
    write_jsonl(work / "samples.jsonl", rows)
    return {**_outputs(donor), "samples": len(rows), "samples_requested": wanted}


def _translate(plan: Plan, stage: PlannedStage, donor: Path, work: Path) -> dict | None:
    from collections import Counter

    keep = set(_ids(_input(plan, stage, "source") / "samples.jsonl"))
    _link_tree(donor, work, skip={"translated.jsonl", "dropped.jsonl"})
    kept = [row for row in read_jsonl(donor / "translated.jsonl") if row["id"] in keep]
    dropped = [row for row in read_jsonl(donor / "dropped.jsonl") if row.get("split") == "eval" or row["id"] in keep]
    write_jsonl(work / "translated.jsonl", kept)
    write_jsonl(work / "dropped.jsonl", dropped)
    outputs = _outputs(donor)
    reasons = Counter(row["reason"] for row in dropped)
    by_reason = {reason: reasons[reason] for reason in outputs.get("dropped_by_reason", {})}
    return {**outputs, "translated": len(kept), "dropped": len(dropped), "dropped_by_reason": by_reason,
            "translation_numbers_of": "the donor run (the translation work was done there once)"}


def _reference(plan: Plan, stage: PlannedStage, donor: Path, work: Path) -> dict | None:
    pairs = {row["id"]: row for row in read_jsonl(_input(plan, stage, "pairs") / "train.jsonl")}
    donor_file = _donor_pairs_file(donor, "train.jsonl")
    donor_pairs = {row["id"]: row for row in read_jsonl(donor_file)} if donor_file else None
    if donor_pairs is None or any(donor_pairs.get(key) != row for key, row in pairs.items()):
        return None  # the training pairs are not the donor's: compute them here
    rows = [row for row in read_jsonl(donor / REFERENCE_FILE) if row["id"] in pairs]
    _link_tree(donor, work, skip={REFERENCE_FILE})
    write_jsonl(work / REFERENCE_FILE, rows)
    outputs = _outputs(donor)
    names = list(rows[0]["logps"]) if rows else []
    means = {name: round(sum(row["logps"][name] for row in rows) / len(rows), 4) for name in names}
    return {**outputs, "samples": len(rows), "dropped_too_long": len(pairs) - len(rows), "mean_logps": means,
            "seconds": 0.0}


def _evaluate_base(plan: Plan, stage: PlannedStage, donor: Path, work: Path) -> dict | None:
    held_out = _input(plan, stage, "pairs") / "eval.jsonl"
    donor_held_out = _donor_pairs_file(donor, "eval.jsonl")
    if donor_held_out is None or held_out.read_bytes() != donor_held_out.read_bytes():
        return None
    _link_tree(donor, work)
    return _outputs(donor)


def _input(plan: Plan, stage: PlannedStage, dep: str) -> Path:
    return plan.stage_dir(plan.stage(dep))


def _donor_pairs_file(donor_stage: Path, name: str) -> Path | None:
    """The pairs stage folder the donor stage read (its manifest names its fingerprint)."""
    manifest = json.loads((donor_stage / MANIFEST).read_text(encoding="utf-8"))
    fingerprint = manifest.get("inputs", {}).get("pairs")
    if not fingerprint:
        return None
    from .store import FP_CHARS

    path = donor_stage.parent / f"pairs-{fingerprint[:FP_CHARS]}" / name
    return path if path.is_file() else None


DERIVERS: dict[str, Callable] = {"source": _source, "translate": _translate, "reference": _reference}


def _deriver(stage: PlannedStage) -> Callable | None:
    if stage.kind == "evaluate":
        return _evaluate_base if stage.arm == "base" else None
    return DERIVERS.get(stage.kind)


def _finish(plan: Plan, stage: PlannedStage, outputs: dict, derived: dict, started: float) -> None:
    manifest = stage_manifest(plan, stage, outputs=outputs, started=started, seconds=time.time() - started,
                              resumed=False, secrets_masked_in=[], derived=derived)
    plan.store.finish(stage.id, stage.fingerprint, manifest)
    stage.status = "done"


def original_seconds(folder: Path) -> float:
    """What the stage took where it really ran (a reused folder carries its original's time)."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return float((manifest.get("derived") or {}).get("original_seconds", manifest.get("seconds", 0.0)))


def finished_folder(run_dirs: list[Path], name: str) -> Path | None:
    for run_dir in run_dirs:
        candidate = run_dir / name
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def reuse_stages(plan: Plan, *, pool: list[Path], donor: Plan | None = None) -> list[dict]:
    """Fill the not-yet-done stages of `plan` that can be reused (in stage order, each only
    once its inputs are done); returns what was reused, `{"stage", "how", "from",
    "original_seconds"}` each (the last: what the stage took where it ran, for a slice the
    larger run's time, so an upper bound of what an independent run would have spent)."""
    reused: list[dict] = []
    others = [run_dir for run_dir in pool if run_dir != plan.run_dir]
    for stage in plan.stages:
        if stage.status == "done" or any(plan.stage(dep).status != "done" for dep in stage.deps):
            continue
        started = time.time()
        folder_name = plan.stage_dir(stage).name
        same = finished_folder(others, folder_name)
        if same is not None:
            work, _ = plan.store.begin(stage.id, stage.fingerprint)
            _link_tree(same, work)
            derived = {"how": "same fingerprint", "from": str(same), "original_seconds": original_seconds(same)}
            _finish(plan, stage, _outputs(same), derived, started)
            reused.append({"stage": stage.id, **derived})
            continue
        deriver = _deriver(stage)
        if donor is None or deriver is None or stage.id not in {s.id for s in donor.stages}:
            continue
        donor_stage = donor.stage(stage.id)
        source = finished_folder([donor.run_dir, *others], donor.stage_dir(donor_stage).name)
        if source is None:
            continue
        work, _ = plan.store.begin(stage.id, stage.fingerprint)
        outputs = deriver(plan, stage, source, work)
        if outputs is None:
            shutil.rmtree(work, ignore_errors=True)
            continue
        derived = {"how": f"slice of the {donor.resolved.recipe.data.samples}-sample run", "from": str(source),
                   "original_seconds": original_seconds(source)}
        _finish(plan, stage, outputs, derived, started)
        reused.append({"stage": stage.id, **derived})
    return reused
