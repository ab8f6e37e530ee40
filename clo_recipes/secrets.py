"""Secrets come from the environment only; this keeps their values out of every artifact.

`redact` replaces any secret value found inside strings of a nested structure, so logs,
resolved recipes, manifests, locks and bundles can be written without leaking a token even
if a user pasted one into a free-text field.
"""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"(TOKEN|API_KEY|APIKEY|SECRET|PASSWORD)", re.IGNORECASE)
MASK = "***"


def secret_values(extra_env_names: tuple[str, ...] = ()) -> list[str]:
    """Values of environment variables that look like secrets (and of the named ones)."""
    values = {
        value
        for name, value in os.environ.items()
        if (_SECRET_NAME.search(name) or name in extra_env_names) and len(value) >= 6
    }
    return sorted(values, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `obj` with every secret value masked in its strings."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return obj
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, MASK)
        return obj
    if isinstance(obj, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    return obj


TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".yaml", ".yml", ".txt", ".csv", ".log", ".html"}


def redact_files(folder, secrets: list[str] | None = None) -> list[str]:
    """Mask secret values in every text file under `folder` (a stage's outputs, before the
    stage is marked finished); returns the files that needed it. A stage that echoes a
    setting into a report cannot leak a token this way."""
    from pathlib import Path

    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return []
    changed = []
    for path in Path(folder).rglob("*"):
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        masked = redact(text, secrets)
        if masked != text:
            path.write_text(masked, encoding="utf-8")
            changed.append(str(path.relative_to(folder)))
    return changed
