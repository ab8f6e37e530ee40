"""Architecture numbers of the models the shipped recipes and the CLO paper use, copied from
their public `config.json` files, so `plan` can estimate memory on a machine that has not
downloaded them yet (and cannot reach the hub). Only what the estimator reads is kept.
"""

from __future__ import annotations

from typing import Any


def _llama(hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int, vocab: int,
           tied: bool = False, model_type: str = "llama") -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
            "intermediate_size": intermediate, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "vocab_size": vocab, "tie_word_embeddings": tied}


_LLAMA3_8B = _llama(4096, 32, 14336, 32, 8, 128256)
_LLAMA2_7B = _llama(4096, 32, 11008, 32, 32, 32000)
_LLAMA2_13B = _llama(5120, 40, 13824, 40, 40, 32000)
_MISTRAL_7B = _llama(4096, 32, 14336, 32, 8, 32000, model_type="mistral")
_QWEN25_3B = _llama(2048, 36, 11008, 16, 2, 151936, tied=True, model_type="qwen2")
_QWEN25_7B = _llama(3584, 28, 18944, 28, 4, 152064, model_type="qwen2")
_SMOLLM2_135M = _llama(576, 30, 1536, 9, 3, 49152, tied=True)
_SMOLLM2_360M = _llama(960, 32, 2560, 15, 5, 49152, tied=True)
_SMOLLM2_1_7B = _llama(2048, 24, 8192, 32, 32, 49152, tied=True)

KNOWN_MODELS: dict[str, dict[str, Any]] = {
    name.lower(): config
    for names, config in (
        (("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct",
          "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct",
          "meta-llama/Meta-Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B-Instruct"), _LLAMA3_8B),
        (("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"), _LLAMA2_7B),
        (("meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"), _LLAMA2_13B),
        (("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1",
          "mistralai/Mistral-7B-Instruct-v0.2"), _MISTRAL_7B),
        (("mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"), {**_MISTRAL_7B, "vocab_size": 32768}),
        (("Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-3B-Instruct"), _QWEN25_3B),
        (("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"), _QWEN25_7B),
        (("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct"), _SMOLLM2_135M),
        (("HuggingFaceTB/SmolLM2-360M", "HuggingFaceTB/SmolLM2-360M-Instruct"), _SMOLLM2_360M),
        (("HuggingFaceTB/SmolLM2-1.7B", "HuggingFaceTB/SmolLM2-1.7B-Instruct"), _SMOLLM2_1_7B),
    )
    for name in names
}
