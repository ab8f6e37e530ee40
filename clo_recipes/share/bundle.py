"""Export a finished run as a self-contained bundle, and seed a new run from one.

    OUT/
      README.md           model card (Hugging Face format)
      recipe.lock.yaml    the run's recipe, every input pinned; paths point into inputs/
      bundle.json         index: stages with fingerprints, and a sha256 of every file
      inputs/<field>/...  the local data files the recipe read (data, translation memory, ...)
      stages/<id>-<fp>/   finished stage folders with their manifests (translated data, pairs,
                          reference log-probs, answers, metrics, report and plots)
      config.json, *.safetensors, ...   the trained model of the run's method (loadable from
                                        the folder or hub repo root); baselines in arms/<arm>/

Only stages that match the run's recipe and inputs as they are now are exported, so the
lock and the stage folders always agree. Every text file is copied through `redact`: a
secret that reached a log or a data file is masked in the bundle.

`seed_from_bundle` copies the bundle's stage folders into a new run's directory when their
fingerprints match that run's plan, so it skips them (translation is the expensive part).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..engine.fingerprint import file_digest
from ..engine.plan import Plan
from ..engine.stages import DATA_KINDS, MODEL_DIR
from ..engine.store import MANIFEST
from ..errors import CloError
from ..secrets import MASK, secret_values
from .lock import collect_pins, lock_document, write_lock

BUNDLE_VERSION = 1
INDEX = "bundle.json"
LOCK_NAME = "recipe.lock.yaml"
CARD = "README.md"
# Local inputs small enough to travel with the bundle (model folders stay where they are).
COPIED_INPUTS = ("data.source", "translation.memory_file", "eval.prompts", "model.chat_template",
                 "hardware.accelerate_config")
TEXT_SUFFIXES = {".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".csv", ".tsv", ".log", ".jinja", ".html", ".tmx"}
_BUNDLE_ENTRIES = {CARD, INDEX, LOCK_NAME, "inputs", "stages", "arms"}


@dataclass
class ExportResult:
    path: Path
    stages: list[str]
    missing: list[str]
    model_dir: str | None
    redacted_files: list[str] = field(default_factory=list)


@dataclass
class SeedOutcome:
    stage: str
    action: str  # seeded | would seed | already done | not in bundle | inputs differ
    detail: str = ""


# --------------------------------------------------------------------------- copying
def _copy_redacted(source: Path, target: Path, secrets: list[str]) -> bool:
    """Copy one file; text files have secret values masked. True when something was masked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if secrets and source.suffix.lower() in TEXT_SUFFIXES:
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            masked = text
            for secret in secrets:
                masked = masked.replace(secret, MASK)
            target.write_text(masked, encoding="utf-8")
            return masked != text
    shutil.copy2(source, target)
    return False


def _model_dir(stage) -> str | None:
    """The trained model folder a stage exports (stage table), or None."""
    return MODEL_DIR.rstrip("/") if MODEL_DIR in stage.spec.exports else None


def _stage_files(directory: Path, model_dir: str | None) -> list[Path]:
    """Files of a finished stage worth sharing: not its resume checkpoints, and not the model
    of a train stage (that goes to the bundle root or arms/<arm>/)."""
    files = []
    for path in sorted(directory.rglob("*")):
        top = path.relative_to(directory).parts[0]
        if not path.is_file() or top.startswith("checkpoint") or top == model_dir:
            continue
        files.append(path)
    return files


# --------------------------------------------------------------------------- export
def export_bundle(plan: Plan, document: dict[str, Any], out: Path, *, license: str | None = None,
                  force: bool = False) -> ExportResult:
    """Write the bundle of a finished run to `out` (atomically: a temp folder renamed at the
    end). `plan` is the run's plan with statuses read from its folder and `document` its
    `recipe.resolved.yaml` (`runner.door.open_run` gives both)."""
    from .card import card_facts, render_card

    done = [stage for stage in plan.stages if stage.status == "done"]
    if not done:
        raise CloError(f"{plan.run_dir} holds no finished stage for its recipe's current inputs",
                       hint="a data file or model changed since the run; re-run it (`clo-recipe run`) and export again")
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / INDEX).is_file():
            raise CloError(f"{out} exists and is not a bundle", hint="choose an empty or new folder")
        if not force:
            raise CloError(f"{out} already holds a bundle", hint="pass --force to replace it")
    secrets = secret_values()
    work = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    redacted: list[str] = []

    def copy(source: Path, relative: str) -> None:
        if _copy_redacted(source, work / relative, secrets):
            redacted.append(relative)

    try:
        pins = collect_pins(plan)
        path_map: dict[str, str] = {}
        copied_inputs: dict[str, str] = {}
        for dotted in COPIED_INPUTS:
            pin = pins["inputs"].get(dotted)
            if pin and pin["kind"] == "file":  # keep the file name: fingerprints hash name + content
                relative = f"inputs/{dotted}/{Path(pin['path']).name}"
                copy(Path(pin["path"]), relative)
                path_map[pin["path"]] = f"./{relative}"
                copied_inputs[dotted] = relative
        lock = lock_document(plan.resolved, pins, lock_dir=work, provenance=plan.resolved.provenance,
                             path_map=path_map, relative=False,
                             locked_from=Path(document.get("source_file") or "recipe.yaml").name)
        write_lock(lock, work / LOCK_NAME)

        method = plan.resolved.recipe.method.name
        stages_index: dict[str, dict[str, Any]] = {}
        model_dir = None
        for stage in done:
            directory = plan.stage_dir(stage)
            entry = {"kind": stage.kind, "arm": stage.arm, "fingerprint": stage.fingerprint,
                     "dir": f"stages/{directory.name}"}
            model = _model_dir(stage)
            for path in _stage_files(directory, model):
                copy(path, f"{entry['dir']}/{path.relative_to(directory).as_posix()}")
            if model and (directory / model).is_dir():
                target = "." if stage.arm == method else f"arms/{stage.arm}"
                entry["model_files"] = []
                for path in sorted(p for p in (directory / model).rglob("*") if p.is_file()):
                    relative = path.relative_to(directory / model).as_posix()
                    if target == "." and relative.split("/")[0] in _BUNDLE_ENTRIES:
                        continue  # e.g. PEFT's own README.md: the bundle's card replaces it
                    destination = relative if target == "." else f"{target}/{relative}"
                    copy(path, destination)
                    entry["model_files"].append(destination)
                if target == ".":
                    model_dir = "."
            stages_index[stage.id] = entry

        missing = [stage.id for stage in plan.stages if stage.status != "done"]
        facts = card_facts(work, lock, stages_index, model_dir=model_dir, license=license,
                           provenance=plan.resolved.provenance, missing=missing)
        (work / CARD).write_text(render_card(facts), encoding="utf-8")
        write_index(work, {
            "bundle_version": BUNDLE_VERSION,
            "name": plan.resolved.recipe.name,
            "method": method,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "clo_recipes": __version__,
            "model_dir": model_dir,
            "stages": stages_index,
            "missing_stages": missing,
            "inputs": copied_inputs,
        })
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return ExportResult(out, list(stages_index), missing, model_dir, redacted)


def write_index(folder: Path, index: dict[str, Any]) -> None:
    """bundle.json, with the sha256 of every other file so a receiver can check it."""
    index["files"] = {path.relative_to(folder).as_posix(): file_digest(path)
                      for path in sorted(folder.rglob("*")) if path.is_file() and path.name != INDEX}
    (folder / INDEX).write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- reading a bundle
def read_index(bundle: Path) -> dict[str, Any]:
    path = Path(bundle).expanduser() / INDEX
    if not path.is_file():
        raise CloError(f"{bundle} is not a bundle (no {INDEX})", hint="pass a folder written by `clo-recipe export`")
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("bundle_version") != BUNDLE_VERSION:
        raise CloError(f"{bundle} was written by an incompatible clo-recipes (bundle_version "
                       f"{index.get('bundle_version')!r}, this one reads {BUNDLE_VERSION})")
    return index


def _check_files(bundle: Path, index: dict[str, Any], relative_paths: list[str]) -> None:
    for relative in relative_paths:
        expected = index["files"].get(relative)
        path = bundle / relative
        if expected is None or not path.is_file() or file_digest(path) != expected:
            raise CloError(f"bundle file {relative} is missing or differs from {INDEX}",
                           hint="the bundle was damaged or edited after export; export or download it again")


def _bundle_stage_files(bundle: Path, index: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    prefix = entry["dir"] + "/"
    return [path for path in index["files"] if path.startswith(prefix)]


def seed_from_bundle(plan: Plan, bundle: Path, kinds: tuple[str, ...] = DATA_KINDS, *,
                     dry_run: bool = False) -> list[SeedOutcome]:
    """Copy the bundle's finished stages of `kinds` into the plan's run directory where their
    fingerprints match (same data, translator, model and code), so the run skips them.
    Files are checked against the bundle's digests first."""
    bundle = Path(bundle).expanduser().resolve()
    index = read_index(bundle)
    outcomes: list[SeedOutcome] = []
    to_seed = []
    for stage in plan.stages:
        if stage.kind not in kinds:
            continue
        entry = index["stages"].get(stage.id)
        if entry is None:
            outcomes.append(SeedOutcome(stage.id, "not in bundle"))
        elif entry["fingerprint"] != stage.fingerprint:
            outcomes.append(SeedOutcome(stage.id, "inputs differ",
                                        f"bundle {entry['fingerprint'][:12]}, this recipe {stage.fingerprint[:12]}"))
        elif stage.status == "done":
            outcomes.append(SeedOutcome(stage.id, "already done"))
        else:
            to_seed.append((stage, entry))
    if dry_run:
        return outcomes + [SeedOutcome(stage.id, "would seed", entry["dir"]) for stage, entry in to_seed]
    if not to_seed:
        return outcomes
    plan.store.claim()
    try:
        for stage, entry in to_seed:
            files = _bundle_stage_files(bundle, index, entry) + list(entry.get("model_files", []))
            _check_files(bundle, index, files)
            if MANIFEST not in {Path(f).name for f in files}:
                raise CloError(f"bundle stage {entry['dir']} has no {MANIFEST}")
            final = plan.stage_dir(stage)
            work = plan.run_dir / f".seed-{final.name}.tmp{os.getpid()}"
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree(bundle / entry["dir"], work)
            for relative in entry.get("model_files", []):  # train stages: model back into model/
                inside = relative.split("/", 2)[-1] if relative.startswith("arms/") else relative
                model = work / MODEL_DIR
                (model / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(bundle / relative, model / inside)
            if final.exists():  # a manifest-less leftover never finished: safe to replace
                shutil.rmtree(final)
            os.replace(work, final)
            stage.status = "done"
            outcomes.append(SeedOutcome(stage.id, "seeded", entry["dir"]))
    finally:
        plan.store.release()
    order = [stage.id for stage in plan.stages]
    return sorted(outcomes, key=lambda outcome: order.index(outcome.stage))
