"""The `manifest.json` of a finished stage, built in one place for a stage that ran and for
one reused from another run (`reuse.py`), so both carry the same fields."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..secrets import redact

VERSIONED_PACKAGES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "flash-attn",
                      "tokenizers", "datasets", "pydantic")


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"clo-recipes": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def stage_manifest(plan: Any, stage: Any, *, outputs: dict, started: float, seconds: float, resumed: bool,
                   secrets_masked_in: list[str], derived: dict | None = None) -> dict[str, Any]:
    """What a finished stage records: identity, what it read, its inputs' fingerprints, its
    outputs, timing and versions (secret values masked)."""
    manifest = {
        "stage": stage.id,
        "kind": stage.kind,
        "arm": stage.arm,
        "fingerprint": stage.fingerprint,
        "stage_version": stage.spec.version,
        "reads": stage.view.values(),
        "inputs": {dep: plan.stage(dep).fingerprint for dep in stage.deps},
        "outputs": outputs,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "resumed": resumed,
        "versions": package_versions(),
        "secrets_masked_in": secrets_masked_in,
    }
    if derived is not None:
        manifest["derived"] = derived
    return redact(manifest)
