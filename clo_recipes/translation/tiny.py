"""Tiny seq2seq translators built offline, for tests and the throughput benchmark.

- `build_tiny_m2m100`: an M2M100 model with a real `M2M100Tokenizer` (a SentencePiece model
  trained on the fly, with M2M100's `__xx__` language tokens), so the `hf` backend's
  language handling (source language, forced BOS target token) runs exactly as with
  `facebook/m2m100_1.2B`;
- `build_tiny_marian`: a Marian (opus-mt shaped) model with a byte-level BPE tokenizer.
Weights are random: the output is noise, but shapes, padding, batching and speed behave like
the real models, which is what tests and the benchmark measure.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "The cat sits on the mat and the dog runs in the park.",
    "How do I boil an egg? Put it in boiling water for eight minutes.",
    "Translation models read a sentence and write it in another language.",
    "Il gatto è sul tappeto e il cane corre nel parco.",
    "Come si bolle un uovo? Mettilo in acqua bollente per otto minuti.",
    "Water boils at one hundred degrees at sea level.",
    "Please write a short poem about the sea, the wind and the stars.",
    "El gato está sobre la alfombra. El perro corre en el parque.",
] * 25


def _train_sentencepiece(folder: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "spm"), vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
    )
    corpus.unlink()
    return folder / "spm.model"


def build_tiny_m2m100(folder: str | Path, *, d_model: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random M2M100ForConditionalGeneration + M2M100Tokenizer to `folder`."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / "_spm"
    work.mkdir(exist_ok=True)
    spm_file = _train_sentencepiece(work, vocab_size=200)
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(spm_file))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for index in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(index), len(vocab))
    (work / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = M2M100Tokenizer(str(work / "vocab.json"), str(spm_file), src_lang="en", tgt_lang="it")
    tokenizer.save_pretrained(folder)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    # Language tokens sit after the SentencePiece vocabulary (plus 8 "made-up" ids M2M100 keeps).
    vocab_size = max(max(tokenizer.get_vocab().values()), max(tokenizer.lang_token_to_id.values())) + 1 + 8
    config = M2M100Config(
        vocab_size=vocab_size, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id, scale_embedding=True,
    )
    torch.manual_seed(seed)
    M2M100ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def build_tiny_marian(folder: str | Path, *, d_model: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random MarianMTModel + byte-level BPE tokenizer to `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(folder)
    return folder
