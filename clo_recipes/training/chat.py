"""Render (query, answer) pairs with the model's own chat template and mask the prompt.

The prompt is rendered exactly as at inference (one user turn plus the assistant header,
tokenized without extra special tokens: the template carries any BOS the model wants) and the
answer is tokenized on its own after it, so training sees the same prompt tokens as generation.
The answer keeps the template's end-of-turn token, so the model learns to stop; a template
that closes no turn gets the tokenizer's EOS appended.

Chat templates break training silently (double BOS, untrained end-of-turn token, prompt tokens
in the loss), so `ChatRenderer.check` renders one real sample and verifies all three before any
long work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CloError

_SENTINEL = "\u2063CLO_ANSWER\u2063"


@dataclass(frozen=True)
class Rendered:
    """One training sequence: `ids[:prompt_length]` is the prompt (masked), the rest the answer."""

    ids: tuple[int, ...]
    prompt_length: int

    @property
    def answer_length(self) -> int:
        return len(self.ids) - self.prompt_length

    def __len__(self) -> int:
        return len(self.ids)


class ChatRenderer:
    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "chat_template", None):
            raise CloError(
                "the model's tokenizer has no chat template, so prompts cannot be rendered as at inference",
                hint="set model.chat_template to inline Jinja or a .jinja file (e.g. a ChatML template)",
            )
        self.tokenizer = tokenizer
        self.end_of_turn = self._end_of_turn_text()

    def prompt_text(self, query: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True
        )

    def conversation_text(self, query: str, answer: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": query}, {"role": "assistant", "content": answer}], tokenize=False
        )

    def _end_of_turn_text(self) -> str:
        """What the template writes after an assistant answer (e.g. `<|im_end|>\\n`); the EOS
        token when it writes nothing, so every trained answer ends in a stop token."""
        text = self.conversation_text("q", _SENTINEL)
        if _SENTINEL not in text:
            raise CloError("the chat template drops the assistant's answer when rendering a conversation",
                           hint="set model.chat_template to a template that renders assistant turns")
        suffix = text.split(_SENTINEL, 1)[1]
        if suffix.strip():
            return suffix
        if self.tokenizer.eos_token is None:
            raise CloError("the chat template ends no assistant turn and the tokenizer has no EOS token",
                           hint="set model.chat_template to a template that closes assistant turns")
        return self.tokenizer.eos_token

    def answer_text(self, query: str, answer: str) -> tuple[str, str]:
        """(prompt text, answer text incl. end-of-turn) whose concatenation is the conversation."""
        prompt = self.prompt_text(query)
        full = self.conversation_text(query, answer)
        if not full.startswith(prompt):
            raise CloError(
                "the chat template renders the prompt differently once an answer follows it, so the "
                "trained prompt would not match the one used at inference",
                hint="set model.chat_template to a template whose generation prompt is a prefix of the conversation",
            )
        completion = full[len(prompt):]
        if not completion.rstrip().endswith(self.end_of_turn.strip()):
            completion = completion + self.end_of_turn  # the template closes no turn: add EOS
        return prompt, completion

    def render(self, query: str, answer: str) -> Rendered:
        return self.render_many([(query, answer)])[0]

    def render_many(self, pairs: list[tuple[str, str]]) -> list[Rendered]:
        """Render and tokenize many (query, answer) pairs in one tokenizer call."""
        texts = [self.answer_text(query, answer) for query, answer in pairs]
        encode = self.tokenizer([t for pair in texts for t in pair], add_special_tokens=False)["input_ids"]
        return [Rendered(tuple(encode[2 * i]) + tuple(encode[2 * i + 1]), len(encode[2 * i])) for i in range(len(texts))]

    def end_of_turn_id(self) -> int | None:
        """The token that ends an assistant turn (first token of the end-of-turn text)."""
        ids = self.tokenizer(self.end_of_turn.strip(), add_special_tokens=False)["input_ids"]
        return ids[0] if ids else None

    def check(self, query: str, answer: str) -> dict[str, Any]:
        """Render one sample and verify what silently breaks training; returns what it saw."""
        rendered = self.render(query, answer)
        ids, cut = list(rendered.ids), rendered.prompt_length
        tokenizer = self.tokenizer
        bos = tokenizer.bos_token_id
        problems = []
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            problems.append("the sequence starts with two BOS tokens (the template and the tokenizer both add one)")
        end_id = self.end_of_turn_id()
        if end_id is None or end_id not in ids[cut:]:
            problems.append(f"the end-of-turn token {self.end_of_turn.strip()!r} is not among the trained answer tokens")
        prompt_part = tokenizer.decode(ids[:cut])
        trained = tokenizer.decode(ids[cut:])
        if query.strip() not in prompt_part:
            problems.append(f"the masked prompt does not hold the query: {prompt_part[-80:]!r}")
        if answer.strip() not in trained:
            problems.append(f"the trained tokens do not hold the whole answer: {trained[:80]!r}")
        elif answer.strip() not in query and answer.strip() in prompt_part:
            problems.append("the answer appears inside the masked prompt")
        if query.strip() not in answer and query.strip() in trained:
            problems.append("the query appears among the trained (unmasked) tokens")
        if problems:
            raise CloError("chat template check failed on the first training sample:\n  - " + "\n  - ".join(problems),
                           hint="fix or override model.chat_template")
        return {
            "prompt_tokens": cut,
            "answer_tokens": len(ids) - cut,
            "bos": tokenizer.convert_ids_to_tokens(ids[0]) if ids else None,
            "end_of_turn": self.end_of_turn.strip(),
            "rendered": prompt_part + "[[trained:]]" + trained,
        }
