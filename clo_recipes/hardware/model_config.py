"""A model's architecture numbers (hidden size, layers, vocabulary, ...) without downloading
or loading it: from a local folder's `config.json`, the Hugging Face cache (offline), a GGUF
file's header, or a table of well-known models. `plan` uses them for the memory estimate.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CloError
from ..model_ref import locate_model
from .known_models import KNOWN_MODELS


def read_model_config(model_section) -> dict[str, Any] | None:
    """The model's config as a Hugging Face `config.json`-shaped dict, or None when it cannot
    be known offline (then `plan` says the memory need is unknown)."""
    try:
        location = locate_model(model_section.base, model_section.gguf_file)
    except CloError:
        return None
    if location.kind == "folder":
        path = Path(location.path) / "config.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if location.kind == "gguf":
        return gguf_config(Path(location.path) / location.gguf_file)
    return hub_cached_config(location.path, model_section.revision) or known_config(location.path)


def hub_cached_config(repo_id: str, revision: str | None = None) -> dict[str, Any] | None:
    """`config.json` from the local Hugging Face cache; never touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    if isinstance(found, str) and Path(found).is_file():
        return json.loads(Path(found).read_text(encoding="utf-8"))
    return None


def known_config(repo_id: str) -> dict[str, Any] | None:
    return dict(KNOWN_MODELS[repo_id.lower()]) if repo_id.lower() in KNOWN_MODELS else None


# --------------------------------------------------------------------------- GGUF
# gguf.GGUFReader parses every array (a 50k-token vocabulary takes seconds); `plan` needs a
# dozen numbers from the header, so read the header alone with the format's type table.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(stream: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(stream: BinaryIO) -> str:
    return stream.read(_read(stream, "<Q")).decode("utf-8", errors="replace")


def _value(stream: BinaryIO, kind: int) -> Any:
    """A scalar or string; for arrays the element count only (the elements are skipped)."""
    if kind in _SCALARS:
        return _read(stream, _SCALARS[kind])
    if kind == _STRING:
        return _string(stream)
    if kind == _ARRAY:
        item_kind, count = _read(stream, "<I"), _read(stream, "<Q")
        if item_kind in _SCALARS:
            stream.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
        else:
            for _ in range(count):
                _value(stream, item_kind)
        return count
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_header(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(metadata with arrays replaced by their lengths, tensor names)."""
    with open(path, "rb") as stream:
        if stream.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(stream, "<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        tensor_count, kv_count = _read(stream, "<Q"), _read(stream, "<Q")
        metadata = {}
        for _ in range(kv_count):
            key = _string(stream)
            metadata[key] = _value(stream, _read(stream, "<I"))
        names = []
        for _ in range(tensor_count):
            names.append(_string(stream))
            dims = _read(stream, "<I")
            stream.seek(8 * dims + 4 + 8, 1)  # shape, ggml type, data offset
    return metadata, names


def gguf_config(path: Path) -> dict[str, Any] | None:
    """A config.json-shaped dict from a GGUF header (llama.cpp's key names)."""
    try:
        metadata, tensors = read_gguf_header(path)
    except (OSError, ValueError):
        return None
    arch = metadata.get("general.architecture")
    hidden = metadata.get(f"{arch}.embedding_length")
    layers = metadata.get(f"{arch}.block_count")
    heads = metadata.get(f"{arch}.attention.head_count")
    if not (arch and hidden and layers and heads):
        return None
    vocab = metadata.get(f"{arch}.vocab_size") or metadata.get("tokenizer.ggml.tokens")
    config = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": metadata.get(f"{arch}.feed_forward_length", 4 * hidden),
        "num_attention_heads": heads,
        "num_key_value_heads": metadata.get(f"{arch}.attention.head_count_kv", heads),
        "vocab_size": vocab,
        # llama.cpp omits the output matrix when it is the embedding matrix
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    if f"{arch}.attention.key_length" in metadata:
        config["head_dim"] = metadata[f"{arch}.attention.key_length"]
    if f"{arch}.expert_count" in metadata:
        config["num_local_experts"] = metadata[f"{arch}.expert_count"]
        config["moe_intermediate_size"] = metadata.get(f"{arch}.expert_feed_forward_length", config["intermediate_size"])
    return config
