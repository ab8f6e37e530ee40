"""The generator a stage uses for `eval.generation_backend`: what to serve and how.

- `transformers`: the stage's own model (`TransformersGenerator`).
- `vllm`: a `ManagedServer` serving exactly the evaluated weights: the base model, a trained
  arm's saved folder, or the base plus the arm's LoRA adapter through vLLM's LoRA support.
  An adapter vLLM cannot serve (rank above its largest `--max-lora-rank`, DoRA, extra saved
  modules) is merged on disk into the stage folder instead, and `merged` says why.
- `endpoint`: a server the user runs (`eval.endpoint`, `eval.endpoint_model`).

`describe` is what the stage's metrics and manifest record about the backend.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from clo_recipes.errors import StageError

from .vllm_server import ManagedServer, ServeSpec, lora_rank_limit

LOG_FILE = "vllm-server.log"
# vLLM has no float64 kernels: an fp64 run (numerical checks) is served in float32.
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp64": "float32"}


def unservable_reason(adapter: Path) -> str | None:
    """Why vLLM cannot serve this LoRA adapter as an adapter, or None when it can."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    rank = int(config.get("r") or 8)
    if lora_rank_limit(rank) is None:
        return f"LoRA rank {rank} is above vLLM's largest --max-lora-rank"
    if config.get("use_dora"):
        return "vLLM does not serve DoRA adapters"
    if config.get("modules_to_save"):
        return f"vLLM does not serve an adapter's fully trained modules ({config['modules_to_save']})"
    return None


def merge_adapter(section: Any, adapter: Path, out: Path, precision: str | None) -> Path:
    """Base + adapter merged into `out` (a plain model folder vLLM loads like any other)."""
    if (out / "config.json").is_file():
        return out
    from peft import PeftModel

    from clo_recipes.training.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(section, precision=precision, attention=None, quantization=None,
                                                for_training=False)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    partial = out.with_name(out.name + ".partial")
    merged.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.replace(partial, out)
    return out


def serve_spec(ctx: Any, subject: Any) -> tuple[ServeSpec, dict]:
    """What the managed server runs for this stage's model, and what the manifest says of it."""
    from clo_recipes.evaluation.models import vllm_source
    from clo_recipes.training.gguf_cache import plain_model_section
    from clo_recipes.training.loading import read_chat_template

    recipe, settings = ctx.recipe, ctx.recipe.eval.vllm
    section = plain_model_section(subject.section, ctx.cache_dir)  # a GGUF base: its converted folder
    subject = replace(subject, section=section)
    source = vllm_source(subject)
    if source is None:
        raise StageError(f"vLLM cannot load model {section.base!r} (a packaged or quantized file)",
                         hint="set eval.generation_backend: transformers")
    info: dict = {"model": source}
    adapter, rank_limit = None, None
    if subject.adapter is not None:
        why = unservable_reason(subject.adapter)
        if why is None:
            adapter = str(subject.adapter)
            rank = int(json.loads((subject.adapter / "adapter_config.json").read_text())["r"])
            rank_limit = lora_rank_limit(rank)
            info |= {"adapter": adapter, "max_lora_rank": rank_limit}
        else:
            source = str(merge_adapter(section, subject.adapter, ctx.work_dir / "merged", recipe.hardware.precision))
            info |= {"model": source, "merged": f"adapter merged on disk: {why}"}
    template = read_chat_template(section.chat_template)
    template_file = None
    if template:
        template_file = ctx.work_dir / "chat_template.jinja"
        template_file.write_text(template, encoding="utf-8")
    memory_share = settings.memory_share
    if memory_share is None and not _cuda():
        memory_share = 0.3  # on CPU vLLM reserves this share of RAM; 0.9 would starve the machine
    spec = ServeSpec(
        model=source, dtype=DTYPES[recipe.hardware.precision],
        tokenizer=section.tokenizer if source == section.base else None,
        chat_template=str(template_file) if template_file else None,
        adapter=adapter, max_lora_rank=rank_limit, max_model_len=settings.max_model_len,
        memory_share=memory_share, extra_args=list(settings.args) + ([] if _cuda() else ["--enforce-eager"]),
    )
    return spec, info


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def generator_for(ctx: Any, subject: Any, backend: str, load_model: Any) -> Iterator[tuple[Any, dict]]:
    """(generator, what the manifest records) for `backend`; a managed server stops on exit."""
    from .generation import EndpointGenerator, TransformersGenerator
    from .vllm_server import check_python

    settings = ctx.recipe.eval
    if backend == "transformers":
        model, tokenizer = load_model()
        yield TransformersGenerator(model, tokenizer, max_new_tokens=settings.max_new_tokens,
                                    batch_size=settings.batch_size), {"backend": "transformers"}
        return
    if backend == "endpoint":
        api_key = os.environ.get(settings.api_key_env) or None
        yield (EndpointGenerator(settings.endpoint, settings.endpoint_model, api_key=api_key,
                                 max_new_tokens=settings.max_new_tokens, concurrency=settings.vllm.concurrency),
               {"backend": "endpoint", "endpoint": settings.endpoint, "model": settings.endpoint_model})
        return
    python = check_python(settings.vllm.python)
    spec, info = serve_spec(ctx, subject)
    server = ManagedServer(spec, python=python, log_path=ctx.work_dir / LOG_FILE,
                           start_timeout_s=settings.vllm.start_timeout_s, port=settings.vllm.port)
    ctx.log.info("evaluate-%s: starting the vLLM server (%s), log %s", ctx.arm, python, server.log_path)
    with server:
        info = {"backend": "vllm", "python": python, **info, "start_s": server.start_seconds,
                "log": LOG_FILE}
        ctx.log.info("evaluate-%s: vLLM server healthy after %.1f s", ctx.arm, server.start_seconds)
        yield EndpointGenerator(server.url, spec.request_model, max_new_tokens=settings.max_new_tokens,
                                concurrency=settings.vllm.concurrency, max_retries=1), info
