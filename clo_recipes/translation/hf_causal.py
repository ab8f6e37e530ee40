"""`hf-causal` backend: a decoder LLM prompted through its chat template to translate.

Each segment becomes one chat (`prompting.translation_messages`: instruction, optional
worked examples from `translation.memory_file`, the segment); batches are left-padded and
decoded greedily, and only the newly generated tokens are kept.
"""

from __future__ import annotations

from typing import Any

from clo_recipes.errors import CloError
from clo_recipes.recipe.languages import get_language

from .base import Translator, load_hf_translator, local_revision
from .cache import TranslatorIdentity
from .prompting import prompt_settings, translation_messages, without_system_role


class CausalTranslator(Translator):
    def __init__(self, model: str, *, revision: str | None = None, batch_size: int = 16,
                 max_new_tokens: int = 512, examples: list[tuple[str, str]] | None = None,
                 device: str | None = None):
        self.model_name, self.revision = model, revision
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.examples = list(examples or [])
        self.device = device
        self.identity = TranslatorIdentity("hf-causal", model, local_revision(model, revision),
                                           prompt_settings(self.examples, max_new_tokens))
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        if self._model is not None:
            return
        tokenizer, model, device = load_hf_translator("AutoModelForCausalLM", self.model_name, self.revision, self.device)
        if not tokenizer.chat_template:
            raise CloError(f"translation model {self.model_name!r} has no chat template",
                           hint="backend 'hf-causal' prompts an instruction-tuned model; pick one with a chat template")
        tokenizer.padding_side = "left"  # generation continues at the right edge of every row
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer, self._model, self.device = tokenizer, model, device

    def prompts(self, texts: list[str], src: str, tgt: str) -> list[str]:
        """The rendered chat prompts for a batch (generation prompt appended)."""
        self.load()
        src_name, tgt_name = get_language(src).name, get_language(tgt).name
        rendered = []
        for text in texts:
            messages = translation_messages(text, src_name, tgt_name, self.examples)
            try:
                prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - templates that refuse a system turn raise their own errors
                prompt = self._tokenizer.apply_chat_template(without_system_role(messages), tokenize=False,
                                                             add_generation_prompt=True)
            rendered.append(prompt)
        return rendered

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        import torch

        prompts = self.prompts(texts, src, tgt)
        # The template already holds any BOS token; adding special tokens would double it.
        encoded = self._tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = {key: value.to(self.device) for key, value in encoded.items()}
        with torch.inference_mode():
            generated = self._model.generate(**encoded, max_new_tokens=self.max_new_tokens, do_sample=False,
                                             pad_token_id=self._tokenizer.pad_token_id)
        new_tokens = generated[:, encoded["input_ids"].shape[1]:]
        return [text.strip() for text in self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
