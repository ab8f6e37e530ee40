"""A GGUF base model is dequantized once per file and kept as a safetensors folder.

transformers converts a GGUF file on every `from_pretrained` (SmolLM2-135M on 2 CPU cores:
28 s for the weights and 9 s for the tokenizer, against 0.5 s for both from safetensors),
and a run loads its base model in up to four stages (reference, each training arm, the base
evaluation; the pairs stage reads only the tokenizer, from the folder once it exists). The
first stage that loads the model converts it into `<cache>/gguf/<stem>-<key>/`: fp32
weights (exactly what the GGUF dequantizes to), config and tokenizer. The key hashes the
file's path, size and modification time and the transformers version, so an edited file or
another converter converts again. Stage fingerprints still hash the GGUF file itself.

The folder holds fp32 weights, so it is larger than the file (SmolLM2-135M: 540 MB for a
98 MB GGUF). When the cache's disk lacks the room, or the GGUF keeps its weights in packed
quantized blocks (not savable as floats), nothing is cached and every stage loads the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import CloError
from ..model_ref import locate_model

log = logging.getLogger("clo_recipes")

SPARE_BYTES = 2 * 2**30  # left free after the conversion, for checkpoints and outputs


def plain_model_section(section: Any, cache_dir: Path | None, *, convert: bool = True) -> Any:
    """`section` with a GGUF base replaced by its converted folder (converting on first use,
    unless `convert` is False: a stage that needs only the tokenizer should not load a whole
    model to get it); any other section unchanged. The tokenizer and chat-template overrides
    are kept."""
    if cache_dir is None:
        return section
    location = locate_model(section.base, section.gguf_file)
    if location.kind != "gguf":
        return section
    gguf = Path(location.path) / location.gguf_file
    if convert:
        folder = converted_folder(gguf, section, cache_dir)
    else:
        folder = _finished(cache_dir / "gguf" / f"{gguf.stem}-{conversion_key(gguf)}")
    if folder is None:
        return section
    return section.model_copy(update={"base": str(folder), "gguf_file": None, "revision": None})


def conversion_key(gguf: Path) -> str:
    import transformers

    stat = gguf.stat()
    identity = [str(gguf.resolve()), stat.st_size, stat.st_mtime_ns, transformers.__version__]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def converted_folder(gguf: Path, section: Any, cache_dir: Path) -> Path | None:
    """The converted folder of `gguf`, made now if missing; None if the file cannot be converted."""
    root = cache_dir / "gguf"
    folder = root / f"{gguf.stem}-{conversion_key(gguf)}"
    if _finished(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Several processes of one launch may arrive together: one converts, the others wait.
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _finished(folder) or _convert(gguf, section, folder)


def _finished(folder: Path) -> Path | None:
    """`folder` if a conversion completed there (config.json arrives with the whole folder)."""
    return folder if (folder / "config.json").is_file() else None


def _convert(gguf: Path, section: Any, folder: Path) -> Path | None:
    from .loading import load_model, load_tokenizer

    # fp32 takes at least twice the file (an fp16 GGUF): when even that does not fit, do not
    # spend a load finding out.
    if not _room_for(2 * gguf.stat().st_size, gguf, folder):
        return None
    plain = section.model_copy(update={"tokenizer": None, "chat_template": None})
    try:
        model = load_model(plain, precision="fp32", for_training=True)
    except CloError as error:
        if "packed quantized blocks" in str(error):
            return None
        raise
    if not _room_for(sum(t.numel() * t.element_size() for t in model.state_dict().values()), gguf, folder):
        return None
    log.info("converting %s to safetensors in %s (once)", gguf.name, folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    load_tokenizer(plain).save_pretrained(partial)
    (partial / "converted_from.json").write_text(json.dumps({"gguf": str(gguf.resolve())}) + "\n", encoding="utf-8")
    partial.rename(folder)  # config.json appears only with the complete folder
    return folder


def _room_for(needed: int, gguf: Path, folder: Path) -> bool:
    free = shutil.disk_usage(folder.parent).free
    if free >= needed + SPARE_BYTES:
        return True
    log.warning("not caching the converted %s: it needs %.1f GiB and %s has %.1f GiB free; "
                "every stage converts the file again", gguf.name, needed / 2**30, folder.parent, free / 2**30)
    return False
