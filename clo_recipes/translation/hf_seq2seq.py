"""`hf` backend: a transformers seq2seq MT model (M2M100, NLLB-200, MADLAD-400, opus-mt).

Each family says "which language" differently; the codes come from the language registry:
- M2M100: `tokenizer.src_lang = "en"` and the target's language token forced as the first
  generated token (`forced_bos_token_id = tokenizer.get_lang_id("it")`);
- NLLB-200: the same with FLORES-200 codes (`eng_Latn` -> `ita_Latn`);
- MADLAD-400: a `<2it>` prefix on every input;
- opus-mt: one model per language pair, nothing to say; multi-target models
  (`opus-mt-en-mul`, `-ROMANCE`) take a `>>ita<<` prefix, used when the tokenizer has it.
The model loads on the first batch (GPU in bf16 where available, else CPU in fp32).

Generation stops at `translation.max_new_tokens` or at 3x the batch's longest input plus 16
tokens, whichever is lower (the `a * source + b` cap of fairseq): a translation is rarely
more than twice its source in tokens, and the cap cuts a hallucination loop short instead of
letting it run to `max_new_tokens` for the whole batch.
"""

from __future__ import annotations

from typing import Any

from clo_recipes.errors import CloError
from clo_recipes.recipe.languages import Language, get_language

from .base import Translator, load_hf_translator, local_revision
from .cache import TranslatorIdentity
from .coverage import detect_family, family_code

MAX_INPUT_TOKENS = 1024
LENGTH_CAP = (3.0, 16)  # new tokens <= a * longest input + b


class Seq2SeqTranslator(Translator):
    def __init__(self, model: str, *, revision: str | None = None, batch_size: int = 16,
                 max_new_tokens: int = 512, num_beams: int = 1, device: str | None = None):
        family = detect_family(model, revision)
        if family is None:
            raise CloError(f"translation.model {model!r} is not a seq2seq family this backend knows",
                           hint="use an M2M100, NLLB-200, MADLAD-400 or opus-mt model")
        self.model_name, self.revision, self.family = model, revision, family
        self.batch_size, self.max_new_tokens, self.num_beams = batch_size, max_new_tokens, num_beams
        self.device = device
        self.identity = TranslatorIdentity("hf", model, local_revision(model, revision),
                                           f"num_beams={num_beams};max_new_tokens={max_new_tokens};"
                                           f"cap={LENGTH_CAP[0]}x+{LENGTH_CAP[1]}")
        self._model: Any = None
        self._tokenizer: Any = None

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        if self._model is not None:
            return
        self._tokenizer, self._model, self.device = load_hf_translator(
            "AutoModelForSeq2SeqLM", self.model_name, self.revision, self.device)

    # ------------------------------------------------------------------ language codes
    def _code(self, language: Language) -> str:
        code = family_code(self.family, language)
        if code is None:
            raise CloError(f"{self.model_name} ({self.family}) cannot translate into {language.name}")
        return code

    def _inputs(self, texts: list[str], src: Language, tgt: Language) -> tuple[list[str], dict[str, Any]]:
        """Model inputs and extra `generate` arguments for this family and language pair."""
        tokenizer = self._tokenizer
        if self.family in ("m2m100", "nllb"):
            tokenizer.src_lang = self._code(src)
            target = self._code(tgt)
            bos = tokenizer.get_lang_id(target) if hasattr(tokenizer, "get_lang_id") else tokenizer.convert_tokens_to_ids(target)
            return texts, {"forced_bos_token_id": bos}
        if self.family == "madlad":
            return [f"<2{tgt.madlad}> {text}" for text in texts], {}
        for token in (f">>{tgt.iso3}<<", f">>{tgt.iso1}<<"):  # multi-target opus-mt models
            if token in tokenizer.get_vocab():
                return [f"{token} {text}" for text in texts], {}
        return texts, {}

    def _language_ids(self) -> set[int]:
        """Language-code tokens to drop from outputs (not every tokenizer marks them special)."""
        mapping = getattr(self._tokenizer, "lang_token_to_id", None) or getattr(self._tokenizer, "lang_code_to_id", None)
        return set(mapping.values()) if mapping else set()

    # ------------------------------------------------------------------ translation
    def generate_ids(self, texts: list[str], src: str, tgt: str) -> Any:
        """Raw generated token ids for a batch (what `translate` decodes)."""
        import torch

        self.load()
        inputs, extra = self._inputs(texts, get_language(src), get_language(tgt))
        encoded = self._tokenizer(inputs, return_tensors="pt", padding=True, truncation=True,
                                  max_length=min(MAX_INPUT_TOKENS, self._tokenizer.model_max_length or MAX_INPUT_TOKENS))
        encoded = {key: value.to(self.device) for key, value in encoded.items()}
        longest = int(encoded["attention_mask"].sum(dim=1).max())
        cap = min(self.max_new_tokens, int(LENGTH_CAP[0] * longest + LENGTH_CAP[1]))
        with torch.inference_mode():
            return self._model.generate(**encoded, **extra, max_new_tokens=cap,
                                        num_beams=self.num_beams, do_sample=False)

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        generated = self.generate_ids(texts, src, tgt)
        drop = self._language_ids()
        rows = [[token for token in row.tolist() if token not in drop] for row in generated]
        return [text.strip() for text in self._tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
