"""The chat prompt that asks an LLM to translate (`hf-causal` and `openai` backends)."""

from __future__ import annotations

import hashlib
import json

PROMPT_VERSION = "v1"  # part of the cache key: change it when the wording below changes


def system_prompt(src_name: str, tgt_name: str) -> str:
    return (
        f"You are a professional translator. Translate the user's message from {src_name} into "
        f"{tgt_name}. Keep markdown formatting, keep placeholders such as [[0]] exactly as they "
        "are, do not answer or explain the message, and reply with the translation only."
    )


def translation_messages(text: str, src_name: str, tgt_name: str,
                         examples: list[tuple[str, str]]) -> list[dict[str, str]]:
    """System instruction, worked examples as earlier turns, then the text."""
    messages = [{"role": "system", "content": system_prompt(src_name, tgt_name)}]
    for source, target in examples:
        messages += [{"role": "user", "content": source}, {"role": "assistant", "content": target}]
    messages.append({"role": "user", "content": text})
    return messages


def without_system_role(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For chat templates that reject a system turn: fold it into the first user turn."""
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def prompt_settings(examples: list[tuple[str, str]], max_tokens: int) -> str:
    """The cache-key settings of an LLM translator: prompt wording, examples, length cap."""
    digest = hashlib.sha256(json.dumps(examples, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    return f"prompt={PROMPT_VERSION};examples={digest};max_tokens={max_tokens}"
