"""Build a tiny Llama-shaped chat model and its tokenizer from scratch, offline.

The tokenizer is a byte-level BPE trained on the fly (so any script round-trips) and carries
a ChatML template like SmolLM2's; the model is randomly initialised from a small config.
Used by tests, `clo-recipe doctor --smoke` and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

# A small bilingual corpus so the BPE learns real merges for English and Spanish.
CORPUS = [
    "The cat sits on the mat. The dog runs in the park.",
    "What is the capital of France? The capital of France is Paris.",
    "How do I boil an egg? Put the egg in boiling water for eight minutes.",
    "El gato está sobre la alfombra. El perro corre en el parque.",
    "¿Cuál es la capital de Francia? La capital de Francia es París.",
    "¿Cómo hiervo un huevo? Pon el huevo en agua hirviendo durante ocho minutos.",
    "Water boils at one hundred degrees. El agua hierve a cien grados.",
    "Thank you very much. Muchas gracias. Good morning. Buenos días.",
] * 20


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE `PreTrainedTokenizerFast` with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_llama(folder: str | Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Write a tiny random LlamaForCausalLM + tokenizer to `folder`; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
