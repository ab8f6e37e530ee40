"""Which weights an evaluate stage measures, and loading them once for every suite.

`base` is the recipe's untrained model; a trained arm is the train stage's `model/` folder,
either full weights (loaded like any local model) or a LoRA adapter applied to the base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clo_recipes.model_ref import locate_model


@dataclass(frozen=True)
class ModelUnderTest:
    label: str  # "base", "clo", "sft", "sft+dpo"
    section: Any  # the ModelSection to load (for full weights: `base` points at the trained folder)
    adapter: Path | None  # LoRA adapter folder on top of `section`

    def describe(self) -> str:
        return f"{self.section.base} + adapter {self.adapter}" if self.adapter else str(self.section.base)


def model_under_test(label: str, model_section: Any, trained_folder: Path | None) -> ModelUnderTest:
    if trained_folder is None:
        return ModelUnderTest(label, model_section, None)
    if (trained_folder / "adapter_config.json").is_file():
        return ModelUnderTest(label, model_section, trained_folder)
    # Full weights: the trained folder carries its own config and tokenizer (saved by train);
    # the recipe's chat-template override still applies, as it did in training.
    section = model_section.model_copy(
        update={"base": str(trained_folder), "revision": None, "gguf_file": None, "tokenizer": None}
    )
    return ModelUnderTest(label, section, None)


def load_for_eval(target: ModelUnderTest, *, precision: str | None, attention: str | None,
                  quantization: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, with any LoRA adapter attached (not merged, so a 4-bit
    base stays 4-bit)."""
    from clo_recipes.training.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(
        target.section, precision=precision, attention=attention, quantization=quantization, for_training=False
    )
    if target.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(target.adapter))
    model.eval()
    return model, tokenizer


def vllm_source(target: ModelUnderTest) -> str | None:
    """The folder or hub id vLLM can load, or None (GGUF and packaged models stay on transformers)."""
    location = locate_model(target.section.base, target.section.gguf_file)
    return location.path if location.kind in ("hub", "folder") else None
