"""Build the recipe's translator. Backend modules (and torch) are imported only when chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clo_recipes.errors import CloError
from clo_recipes.recipe.backends import BACKENDS, load_function

from .base import Translator
from .memory import MemoryTranslator, read_jsonl_memory, read_tmx_memory


def few_shot_examples(section: Any, src: str, tgt: str) -> list[tuple[str, str]]:
    """The first `translation.few_shot` (source, target) entries of `translation.memory_file`."""
    if not section.few_shot:
        return []
    path = Path(section.memory_file)
    if not path.is_file():
        raise CloError(f"translation.few_shot reads its examples from {path}, which does not exist")
    reader = read_tmx_memory if path.suffix.lower() == ".tmx" else read_jsonl_memory
    examples = list(reader(path, src, tgt).items())[: section.few_shot]
    if len(examples) < section.few_shot:
        raise CloError(f"translation.few_shot is {section.few_shot} but {path.name} holds {len(examples)} entries")
    return examples


def build_translator(section: Any, *, src: str, tgt: str) -> Translator:
    """The translator for the recipe's `translation` section (languages as ISO 639-1), built by
    the function the backend registry (`recipe/backends.py`) names."""
    if section.backend not in BACKENDS:
        raise CloError(f"unknown translation.backend {section.backend!r}", hint=f"one of {', '.join(BACKENDS)}")
    return load_function(BACKENDS[section.backend].build)(section, src=src, tgt=tgt)


# Builders named by the registry; backend modules (and torch) are imported only when chosen.
def build_memory(section: Any, *, src: str, tgt: str) -> Translator:
    return MemoryTranslator(section.memory_file, section.max_segment_chars)


def build_seq2seq(section: Any, *, src: str, tgt: str) -> Translator:
    from .hf_seq2seq import Seq2SeqTranslator

    return Seq2SeqTranslator(section.model, revision=section.revision, batch_size=section.batch_size,
                             max_new_tokens=section.max_new_tokens, num_beams=section.num_beams)


def build_local(section: Any, *, src: str, tgt: str) -> Translator:
    from .local_mt import LocalMTTranslator

    return LocalMTTranslator(section.model, batch_size=section.batch_size, threads=section.concurrency)


def build_causal(section: Any, *, src: str, tgt: str) -> Translator:
    from .hf_causal import CausalTranslator

    return CausalTranslator(section.model, revision=section.revision, batch_size=section.batch_size,
                            max_new_tokens=section.max_new_tokens, examples=few_shot_examples(section, src, tgt))


def build_openai(section: Any, *, src: str, tgt: str) -> Translator:
    from .openai_compat import OpenAITranslator

    return OpenAITranslator(section.endpoint, section.model, api_key_env=section.api_key_env,
                            concurrency=section.concurrency, timeout_s=section.timeout_s,
                            max_retries=section.max_retries, max_tokens=section.max_new_tokens,
                            batch_size=section.batch_size, examples=few_shot_examples(section, src, tgt))
