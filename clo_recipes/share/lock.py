"""Lock files: a recipe with everything it depends on pinned, and the check that a run matches.

A lock is itself a runnable recipe:

    lock_version: 1
    locked_from: thai.yaml
    created: 2025-06-01T12:00:00+00:00
    recipe:            # the fully resolved recipe; hub revisions set to commit hashes,
      ...              # paths relative to the lock, hardware as the author wrote it
    pins:
      inputs:          # model/tokenizer/data/translator: commit hash or content digest
      samples:         # digest of the sampled ids (from the source stage)
      versions:        # torch, transformers, peft, accelerate, ... and clo-recipes
      hardware:        # the resolved hardware profile
      python: 3.11.9

`load_locked` reads the `recipe:` part through the ordinary validation (errors point at
lines of the lock file); `verify_pins` lists what differs between a lock and what a run
would use now; a run refuses on any blocking difference unless it relocks.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..engine.fingerprint import DigestCache
from ..engine.plan import Plan, cache_dir_for
from ..errors import CloError
from ..files import write_text_atomic
from ..recipe.resolve import _PATH_FIELDS, Resolved
from ..secrets import redact
from .lockfile import LOCK_VERSION, Lock
from .pins import (NUMERIC_HARDWARE, REVISION_FIELDS, hardware_pin, input_pins, python_version, sample_ids_digest,
                   sample_pin, version_pins)

# Recipe values that may differ without changing what a run computes.
_UNPINNED_VALUES = ("name", "output_dir", "cache_dir")


@dataclass(frozen=True)
class Difference:
    """One pinned item that does not match. Non-blocking ones are printed, not refused."""

    field: str
    locked: str
    now: str
    blocking: bool = True

    def render(self) -> str:
        return f"{self.field}: locked {self.locked}, now {self.now}"


class LockMismatch(CloError):
    def __init__(self, lock_path: Path, differences: list[Difference]):
        self.differences = differences
        shown = [d for d in differences if d.blocking]
        lines = "".join(f"\n  {d.render()}" for d in shown)
        super().__init__(
            f"this run does not match its lock {lock_path} ({len(shown)} pinned "
            f"{'item differs' if len(shown) == 1 else 'items differ'}):{lines}",
            hint="restore the locked inputs/versions, or pass --relock to pin what is here now",
        )


# --------------------------------------------------------------------------- writing
def collect_pins(plan: Plan) -> dict[str, Any]:
    """Everything a lock pins for this plan's recipe (hub references are resolved here)."""
    recipe = plan.resolved.recipe
    digests = DigestCache(plan.cache_dir / "file-digests.json")
    errors: dict[str, CloError] = {}
    inputs = input_pins(recipe, digests, errors)
    if errors:  # every reference that cannot be pinned, at once
        raise CloError(problems=[problem for error in errors.values() for problem in error.problems])
    pins = {
        "inputs": inputs,
        "samples": sample_pin(plan),
        "versions": version_pins(recipe),
        "hardware": hardware_pin(recipe),
        "python": python_version(),
    }
    digests.save()
    return pins


def _written_hardware(hardware: dict[str, Any], provenance: dict[str, str]) -> dict[str, Any]:
    """The hardware values the author wrote (profile name and overrides): the profile fills
    the rest on the machine that runs the lock, and `pins.hardware` says what it was here."""
    written: dict[str, Any] = {}
    for key, value in hardware.items():
        origin = provenance.get(f"hardware.{key}", "default")
        if key == "profile":
            written[key] = "auto" if origin.startswith("auto") else value
        elif value is not None and origin != "default" and not origin.startswith(("profile:", "derived:", "auto")):
            written[key] = value
    return written


def _portable(value: str, lock_dir: Path, path_map: dict[str, str], relative: bool) -> str:
    if value in path_map:
        return path_map[value]
    if not relative or not value.startswith("/"):
        return value
    rel = os.path.relpath(value, lock_dir)
    return rel if rel.startswith("..") else f"./{rel}"


def lock_document(resolved: Resolved, pins: dict[str, Any], *, lock_dir: Path,
                  provenance: dict[str, str] | None = None, path_map: dict[str, str] | None = None,
                  relative: bool = True, locked_from: str | None = None) -> dict[str, Any]:
    """The lock as a YAML-ready mapping. Local paths become relative to `lock_dir` (or, with
    `relative=False`, stay absolute unless `path_map` relocates them, as bundles do)."""
    path_map = path_map or {}
    recipe = resolved.recipe.model_dump(mode="json")
    recipe["hardware"] = _written_hardware(recipe["hardware"], provenance or resolved.provenance)
    for dotted, (section, revision_field) in REVISION_FIELDS.items():
        pin = pins["inputs"].get(dotted) or {}
        if pin.get("kind") == "hub":
            recipe[section][revision_field] = pin["revision"]
    for path in _PATH_FIELDS:
        section = recipe.get(path[0])
        if isinstance(section, dict) and isinstance(section.get(path[1]), str):
            section[path[1]] = _portable(section[path[1]], lock_dir, path_map, relative)
    pins = copy.deepcopy(pins)
    for pin in pins["inputs"].values():
        if "path" in pin:
            pin["path"] = _portable(pin["path"], lock_dir, path_map, relative)
    return redact({
        "lock_version": LOCK_VERSION,
        "locked_from": locked_from or resolved.source.path.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clo_recipes": __version__,
        "recipe": recipe,
        "pins": pins,
    })


def lock_text(document: dict[str, Any], lock_name: str) -> str:
    header = (
        f"# Lock of {document['locked_from']}, written by `clo-recipe lock` (clo-recipes {document['clo_recipes']}).\n"
        f"# Run exactly this recipe: clo-recipe run {lock_name}\n"
        "# The run refuses when a pinned input, package version or numeric hardware setting differs;\n"
        "# `--relock` re-pins what is here now.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def write_lock(document: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, lock_text(document, path.name))
    return path


def lock_plan(plan: Plan, path: Path, locked_from: str | None = None) -> dict[str, Any]:
    """Pin `plan`'s recipe and write the lock to `path`; returns the document."""
    pins = collect_pins(plan)
    locked_from = locked_from or os.path.relpath(plan.resolved.source.path, path.parent.resolve())
    document = lock_document(plan.resolved, pins, lock_dir=path.parent.resolve(), locked_from=locked_from)
    write_lock(document, path)
    return document


# --------------------------------------------------------------------------- verifying
def _short(value: Any) -> str:
    return value[:12] if isinstance(value, str) and len(value) > 12 else str(value)


def describe_pin(pin: dict[str, Any] | None) -> str:
    if not pin:
        return "(not used)"
    kind = pin.get("kind")
    if kind == "hub":
        return f"{pin['id']}@{_short(pin['revision'])}"
    if kind in ("file", "folder"):
        return f"sha256 {_short(pin['sha256'])} ({Path(pin['path']).name})"
    if kind == "pypi":
        return f"{pin['package']} {pin['version']} sha256 {_short(pin['sha256'])}"
    if kind == "served":
        return f"{pin['model']} at {pin['endpoint']}"
    if kind == "engine":
        return f"{pin['engine']} ({pin['package']} {pin['version']})"
    return str(pin)


def _same_input(locked: dict[str, Any] | None, now: dict[str, Any] | None) -> bool:
    if not locked or not now or locked.get("kind") != now.get("kind"):
        return locked == now
    keys = {"hub": ("id", "revision"), "file": ("sha256",), "folder": ("sha256",),
            "pypi": ("package", "version", "sha256"), "served": ("endpoint", "model"),
            "engine": ("package", "version")}.get(locked["kind"], ())
    return all(locked.get(k) == now.get(k) for k in keys)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _value_differences(lock: Lock, resolved: Resolved, pinned_fields: set[str]) -> list[Difference]:
    """Recipe values changed against the lock (by `--set` or by hand)."""
    # inputs are compared by pin (content or commit); their revision fields stay compared
    # here, so `--set model.revision=main` on a lock is refused even when `main` has not moved
    skip = set(pinned_fields) | {".".join(p) for p in _PATH_FIELDS}
    locked = _flatten({k: v for k, v in lock.recipe.items() if k != "hardware"})
    now = _flatten(redact({k: v for k, v in resolved.recipe.model_dump(mode="json").items() if k != "hardware"}))
    differences = []
    for key in sorted(set(locked) | set(now)):
        if key in skip or key.split(".")[0] in _UNPINNED_VALUES:
            continue
        if locked.get(key) != now.get(key):
            differences.append(Difference(key, repr(locked.get(key)), repr(now.get(key))))
    return differences


def _version_differences(locked: dict[str, Any], now: dict[str, Any]) -> list[Difference]:
    differences = []
    for name, version in locked.items():
        current = now.get(name)
        if version == current:
            continue
        if version is None:  # the author's machine lacked it: nothing to hold this one to
            differences.append(Difference(f"versions.{name}", "not installed", str(current), blocking=False))
        else:
            differences.append(Difference(f"versions.{name}", version, current or "not installed"))
    return differences


def _hardware_differences(locked: dict[str, Any], now: dict[str, Any]) -> list[Difference]:
    differences = []
    for key in sorted(set(locked) | set(now)):
        if locked.get(key) != now.get(key):
            differences.append(Difference(f"hardware.{key}", str(locked.get(key)), str(now.get(key)),
                                          blocking=key in NUMERIC_HARDWARE))
    return differences


def verify_pins(resolved: Resolved, lock: Lock, plan: Plan | None = None) -> list[Difference]:
    """Everything that differs between `lock` and what a run of `resolved` would use now:
    inputs (by commit or content), recipe values, package versions, numeric hardware
    settings, and, when `plan`'s source stage has run, the sampled ids."""
    pins = lock.pins
    digests = DigestCache(cache_dir_for(resolved) / "file-digests.json")
    locked_inputs: dict[str, Any] = pins.get("inputs") or {}
    errors: dict[str, CloError] = {}
    now_inputs = redact(input_pins(resolved.recipe, digests, errors))  # the lock holds masked values too
    digests.save()

    differences: list[Difference] = []
    for key in sorted(set(locked_inputs) | set(now_inputs) | set(errors)):
        if key in errors:  # e.g. a tokenizer's hub commit cannot be looked up offline
            differences.append(Difference(key, describe_pin(locked_inputs.get(key)),
                                          f"cannot be checked ({errors[key].problems[0].message})",
                                          blocking=(locked_inputs.get(key) or {}).get("kind") != "hub"))
        elif not _same_input(locked_inputs.get(key), now_inputs.get(key)):
            differences.append(Difference(key, describe_pin(locked_inputs.get(key)), describe_pin(now_inputs.get(key))))
    differences += _value_differences(lock, resolved, set(locked_inputs) | set(now_inputs))
    differences += _version_differences(pins.get("versions") or {}, version_pins(resolved.recipe))
    differences += _hardware_differences(pins.get("hardware") or {}, hardware_pin(resolved.recipe))
    if pins.get("python") and pins["python"] != python_version():
        differences.append(Difference("python", pins["python"], python_version(), blocking=False))
    if plan is not None:
        differences += verify_samples(plan, lock)
    return [Difference(d.field, redact(d.locked), redact(d.now), d.blocking) for d in differences]


def verify_samples(plan: Plan, lock: Lock) -> list[Difference]:
    """Compare the sampled ids of the plan's finished source stage with the lock's."""
    locked = lock.pins.get("samples") or {}
    stage = plan.stage("source")
    if "ids_sha256" not in locked or stage.status != "done":
        return []
    found = sample_ids_digest(plan.stage_dir(stage))
    if found is None or found["ids_sha256"] == locked["ids_sha256"]:
        return []
    return [Difference("samples", f"ids sha256 {_short(locked['ids_sha256'])} ({locked.get('train')} train)",
                       f"ids sha256 {_short(found['ids_sha256'])} ({found.get('train')} train)")]


def blocking(differences: list[Difference]) -> list[Difference]:
    return [d for d in differences if d.blocking]
