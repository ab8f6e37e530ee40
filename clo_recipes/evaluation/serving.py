"""The generators and judge clients the backend registry (`recipe/generation_backends.py`)
names, and the one managed-server block both the evaluate and the judge stage use.

- `transformers`: the stage's own model (`TransformersGenerator`).
- `vllm`: a `ManagedServer` serving exactly the evaluated weights: the base model, a trained
  arm's saved folder, or the base plus the arm's LoRA adapter through vLLM's LoRA support.
  An adapter vLLM cannot serve (rank above its largest `--max-lora-rank`, DoRA, extra saved
  modules) is merged on disk into the stage folder instead, and `merged` says why. For the
  judge: a server serving `eval.judge.model`.
- `endpoint`: a server the user runs (`eval.endpoint`, `eval.endpoint_model`; for the judge
  `eval.judge.endpoint`, `eval.judge.model`).

Each opener yields (generator or client, what metrics.json / judge.json record about it).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from clo_recipes.errors import StageError
from clo_recipes.model_ref import locate_model
from clo_recipes.recipe.backends import load_function
from clo_recipes.recipe.generation_backends import GenerationBackend
from clo_recipes.recipe.generation_backends import backend as generation_backend

from .vllm_server import ManagedServer, ServeSpec, check_python, lora_rank_limit

LOG_FILE = "vllm-server.log"
VERDICT_TOKENS = 16  # tokens a managed judge server is asked for per verdict (a short reply)
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

    recipe = ctx.recipe
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
    spec = ServeSpec(
        model=source, dtype=DTYPES[recipe.hardware.precision],
        tokenizer=section.tokenizer if source == section.base else None,
        chat_template=str(template_file) if template_file else None,
        adapter=adapter, max_lora_rank=rank_limit,
        **server_options(recipe, source, DTYPES[recipe.hardware.precision], recipe.eval.max_new_tokens),
    )
    return spec, info


# On CPU the KV cache is sized to what the stage sends (vLLM's default, a share of RAM, is
# gigabytes that take seconds to allocate and that the answers never use): every request in
# flight holds a prompt of up to PROMPT_TOKENS plus its new tokens, and one sequence of the
# served context must fit. Capped at the RAM share used when the model's shape is unknown.
PROMPT_TOKENS = 512
# vLLM keeps one KV block empty (its null block) and rounds to whole blocks: a cache of exactly
# one max_model_len sequence is refused at start ("0.04 GiB needed ... 0.04 GiB available").
SPARE_TOKENS = 512
CPU_RAM_SHARE = 0.3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def cpu_kv_cache_bytes(source: str, dtype: str, settings: Any, max_new_tokens: int) -> int | None:
    """`--kv-cache-memory-bytes` for a CPU server of `source`; None (vLLM's RAM share) when
    its config cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source).get_text_config()
    except (OSError, ValueError):
        return None
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * DTYPE_BYTES[dtype]  # keys and values
    context = settings.max_model_len or config.max_position_embeddings
    tokens = max(context, settings.concurrency * (PROMPT_TOKENS + max_new_tokens)) + SPARE_TOKENS
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(per_token * tokens, int(CPU_RAM_SHARE * ram))


def server_options(recipe: Any, source: str, dtype: str, new_tokens: int) -> dict:
    """The `eval.vllm` settings every managed server takes (evaluate's and the judge's); on
    CPU, unless `eval.vllm.memory_share` is set, a KV cache for `new_tokens` per request
    beyond its prompt (`cpu_kv_cache_bytes`)."""
    settings = recipe.eval.vllm
    memory_share, kv_cache_bytes = settings.memory_share, None
    if memory_share is None and not _cuda():
        kv_cache_bytes = cpu_kv_cache_bytes(source, dtype, settings, new_tokens)
    return {"max_model_len": settings.max_model_len, "memory_share": memory_share, "kv_cache_bytes": kv_cache_bytes,
            "extra_args": list(settings.args) + ([] if _cuda() else ["--enforce-eager"])}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def generator_for(ctx: Any, subject: Any, backend: GenerationBackend, load_model: Any):
    """(generator, what the manifest records) from the function the registry names for this
    backend (a context manager: a managed server stops on exit)."""
    return load_function(backend.open)(ctx, subject, load_model)


def judge_client_for(ctx: Any, settings: Any):
    """(judge ChatClient, what judge.json records) from the function the registry names for
    `eval.judge.backend` (a context manager: a managed server stops on exit)."""
    return load_function(generation_backend(settings.backend).judge)(ctx, settings)


@contextlib.contextmanager
def managed_server(ctx: Any, spec: ServeSpec, asked_by: str) -> Iterator[tuple[ManagedServer, dict]]:
    """A healthy `ManagedServer` for `spec` with the `eval.vllm` settings, its log in the stage
    folder; stopped when the block ends, also on error, SIGTERM and Ctrl-C (see vllm_server)."""
    settings = ctx.recipe.eval.vllm
    python = check_python(settings.python, asked_by=asked_by)
    server = ManagedServer(spec, python=python, log_path=ctx.work_dir / LOG_FILE,
                           start_timeout_s=settings.start_timeout_s, port=settings.port)
    ctx.log.info("%s: starting the vLLM server (%s), log %s", ctx.stage_id, python, server.log_path)
    with server:
        ctx.log.info("%s: vLLM server healthy after %.1f s", ctx.stage_id, server.start_seconds)
        yield server, {"backend": "vllm", "python": python, "start_s": server.start_seconds, "log": LOG_FILE}


# Openers the registry names (`recipe/generation_backends.py`).
@contextlib.contextmanager
def open_transformers(ctx: Any, subject: Any, load_model: Any) -> Iterator[tuple[Any, dict]]:
    from .generation import TransformersGenerator

    settings = ctx.recipe.eval
    model, tokenizer = load_model()
    yield TransformersGenerator(model, tokenizer, max_new_tokens=settings.max_new_tokens,
                                batch_size=settings.batch_size), {"backend": "transformers"}


@contextlib.contextmanager
def open_endpoint(ctx: Any, subject: Any, load_model: Any) -> Iterator[tuple[Any, dict]]:
    from .generation import EndpointGenerator

    settings = ctx.recipe.eval
    api_key = os.environ.get(settings.api_key_env) or None
    yield (EndpointGenerator(settings.endpoint, settings.endpoint_model, api_key=api_key,
                             max_new_tokens=settings.max_new_tokens, concurrency=settings.vllm.concurrency),
           {"backend": "endpoint", "endpoint": settings.endpoint, "model": settings.endpoint_model})


@contextlib.contextmanager
def open_managed(ctx: Any, subject: Any, load_model: Any) -> Iterator[tuple[Any, dict]]:
    from .generation import EndpointGenerator

    settings = ctx.recipe.eval
    check_python(settings.vllm.python)  # before any merge on disk
    spec, info = serve_spec(ctx, subject)
    with managed_server(ctx, spec, "eval.generation_backend") as (server, started):
        yield (EndpointGenerator(server.url, spec.request_model, max_new_tokens=settings.max_new_tokens,
                                 concurrency=settings.vllm.concurrency, max_retries=1),
               {**started, **info})


@contextlib.contextmanager
def judge_endpoint(ctx: Any, settings: Any) -> Iterator[tuple[Any, dict]]:
    """The judge at `eval.judge.endpoint`; unusable (no endpoint, no key): `JudgeUnavailable`,
    which the judge stage records as skipped."""
    from clo_recipes.chat_endpoint import is_loopback

    from .judge import ChatClient, JudgeUnavailable

    if not settings.endpoint or not settings.model:
        raise JudgeUnavailable("no judge configured: set eval.judge.endpoint and eval.judge.model")
    api_key = os.environ.get(settings.api_key_env)
    if not api_key and not is_loopback(settings.endpoint):
        raise JudgeUnavailable(f"API key missing: environment variable {settings.api_key_env} is not set")
    yield (ChatClient(settings.endpoint, settings.model, api_key, timeout_s=settings.timeout_s),
           {"backend": "endpoint", "endpoint": settings.endpoint})


@contextlib.contextmanager
def judge_managed(ctx: Any, settings: Any) -> Iterator[tuple[Any, dict]]:
    """A vLLM server serving `eval.judge.model` (a hub id or a local folder) for this judge
    stage. Verdicts are cached under what the server serves (the model's content digest for a
    folder, and the dtype), never under the name requests use, which is the same for every
    model a managed server serves."""
    from .judge import ChatClient

    location = locate_model(settings.model)
    if location.kind not in ("hub", "folder"):
        raise StageError(f"vLLM cannot serve the judge model {settings.model!r} (a GGUF file)",
                         hint="set eval.judge.model to a hub id or a model folder, or use eval.judge.backend: endpoint")
    dtype = DTYPES[ctx.recipe.hardware.precision]
    # each judge request holds both answers and asks for a short verdict
    new_tokens = 2 * ctx.recipe.eval.max_new_tokens + VERDICT_TOKENS
    spec = ServeSpec(model=location.path, dtype=dtype, **server_options(ctx.recipe, location.path, dtype, new_tokens))
    identity = f"vllm:{_content_identity(ctx, location)}:{dtype}"
    with managed_server(ctx, spec, "eval.judge.backend") as (server, started):
        yield (ChatClient(server.url, spec.request_model, None, timeout_s=settings.timeout_s,
                           max_tokens=VERDICT_TOKENS, identity=identity),
               {**started, "model": location.path, "identity": identity})


def _content_identity(ctx: Any, location: Any) -> str:
    """A hub id as it is; a local folder by the digest of its files (the stage fingerprints' digests)."""
    if location.kind == "hub":
        return location.path
    from clo_recipes.engine.fingerprint import DigestCache, tree_digest

    digests = DigestCache(ctx.cache_dir / "file-digests.json")
    digest = tree_digest(location.files(), Path(location.path), digests)
    digests.save()
    return f"folder-sha256:{digest}"
