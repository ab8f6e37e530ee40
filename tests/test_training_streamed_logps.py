"""Streamed answer log-probs (methods/streamed.py, training/streaming.py) against the full-logits
path they replace, in fp64: values and gradients of every trained weight.

Both paths do the same products and differ only in where the head's rows are blocked and in
log-softmax's summation order, so in fp64 they agree to ~1e-15 relative; 1e-10 absolute on
log-probs of magnitude ~10-100 (and gradients of magnitude ~1-10) keeps a margin of 1e4 while
a missed soft-cap, bias or wrong row shifts them by 1e-3 or more.
"""

from __future__ import annotations

import pytest
import torch

from clo_recipes.hardware import logps_plan
from clo_recipes.methods.logps import IGNORE_INDEX
from clo_recipes.methods.streamed import LogitTransform, streamed_token_logps
from clo_recipes.training.streaming import LogpsPath, choose_path, full_answer_logps, streamed_answer_logps

TOLERANCE = 1e-10


def reference_logps(hidden, targets, head, transform):
    return transform(head(hidden)).log_softmax(-1).gather(1, targets.unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("trains", [False, True])
@pytest.mark.parametrize("transform", [LogitTransform(), LogitTransform(softcap=2.0), LogitTransform(scale=0.5, softcap=3.0)])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_streamed_token_logps_equal_log_softmax_in_fp64(trains, transform, chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=True).double()  # a head bias (GPT-2 style heads, some adapters)
    head.requires_grad_(trains)
    hidden = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (11,))
    weights = torch.randn(11, dtype=torch.float64)  # a non-uniform upstream gradient

    def run(fn):
        hidden.grad = None
        head.zero_grad()
        values = fn()
        (values * weights).sum().backward()
        grads = [hidden.grad.clone()] + ([head.weight.grad.clone(), head.bias.grad.clone()] if trains else [])
        return values.detach(), grads

    expected, expected_grads = run(lambda: reference_logps(hidden, targets, head, transform))
    got, got_grads = run(lambda: streamed_token_logps(hidden, targets, head, head_trains=trains, chunk_tokens=chunk,
                                                      transform=transform))
    assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE)
    for a, b in zip(got_grads, expected_grads):
        assert torch.allclose(a, b, rtol=0, atol=TOLERANCE)
    if transform.softcap:  # the cap really changes the numbers (so the test can fail)
        plain = reference_logps(hidden, targets, head, LogitTransform()).detach()
        assert (plain - expected).abs().max() > 1e-3


def test_a_chunk_never_holds_more_than_its_rows_of_logits():
    seen = []
    linear = torch.nn.Linear(4, 30)

    def head(rows):
        seen.append(rows.shape[0])
        return linear(rows)

    hidden = torch.randn(10, 4, requires_grad=True)
    streamed_token_logps(hidden, torch.randint(0, 30, (10,)), head, head_trains=False, chunk_tokens=4).sum().backward()
    assert seen == [4, 4, 2]  # once per chunk: the gradient was taken in forward, backward recomputes nothing


# --------------------------------------------------------------------------- through real models
def tiny_llama(tied: bool = True, vocab: int = 300):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).double()


def tiny_gemma2(softcap: float):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=4, final_logit_softcapping=softcap,
                          attn_implementation="eager")
    model = Gemma2ForCausalLM(config).double()
    with torch.no_grad():  # logits of a few nats (random init gives ~0.01), where a cap of 0.5 bites
        model.lm_head.weight.mul_(100)
    return model


def batch(vocab: int = 300):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 12), generator=generator)
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX
    labels[1, :9] = IGNORE_INDEX  # a shorter answer
    return {"input_ids": ids, "logits_to_keep": 8, "use_cache": False}, labels


def values_and_grads(model, fn):
    model.zero_grad()
    out = fn()
    (out.sum * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return out.sum.detach(), out.count, grads


def assert_paths_agree(model, inputs, labels, chunk=5, transform=LogitTransform(), path=None):
    path = path or LogpsPath(True, "test", chunk, transform)
    full = values_and_grads(model, lambda: full_answer_logps(model, inputs, labels))
    streamed = values_and_grads(model, lambda: streamed_answer_logps(model, inputs, labels, path))
    assert torch.equal(full[1], streamed[1])
    assert torch.allclose(streamed[0], full[0], rtol=0, atol=TOLERANCE)
    assert full[2].keys() == streamed[2].keys() and full[2]
    for name in full[2]:
        assert torch.allclose(streamed[2][name], full[2][name], rtol=0, atol=TOLERANCE), name
    return full


@pytest.mark.parametrize("scope", ["attention", "all"])
@pytest.mark.parametrize("tied", [True, False])
def test_tiny_llama_streamed_equals_full_logits(scope, tied):
    """attention: the head is frozen (gradient taken in forward); all: the head trains (tied to
    the embeddings or not), so its chunks are checkpointed and recomputed in backward."""
    model = tiny_llama(tied)
    for name, param in model.named_parameters():
        param.requires_grad_(scope == "all" or "self_attn" in name)
    inputs, labels = batch()
    full = assert_paths_agree(model, inputs, labels)
    if scope == "all":
        assert "lm_head.weight" in full[2] or "model.embed_tokens.weight" in full[2]


def test_head_with_a_bias_and_a_lora_adapter():
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(tied=False)
    model.lm_head = torch.nn.Linear(16, 300, bias=True).double()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    inputs, labels = batch()
    full = assert_paths_agree(model, inputs, labels)
    assert any("lora_A" in name for name in full[2])
    # a LoRA on the head itself: its adapter weights train through the checkpointed chunks
    model = get_peft_model(tiny_llama(tied=False), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                               target_modules=["q_proj", "lm_head"]))
    full = assert_paths_agree(model, inputs, labels)
    assert any("lm_head.lora_B" in name for name in full[2])


def test_gemma2_logit_softcap_is_applied_once():
    model = tiny_gemma2(softcap=0.5)  # small enough to change every log-prob of this tiny model
    inputs, labels = batch()
    for name, param in model.named_parameters():
        param.requires_grad_("self_attn" in name)
    path = LogpsPath(True, "test", 5, LogitTransform(softcap=0.5))
    assert_paths_agree(model, inputs, labels, transform=path.transform)
    uncapped = streamed_answer_logps(model, inputs, labels, LogpsPath(True, "test", 5)).sum
    assert (uncapped - full_answer_logps(model, inputs, labels).sum).abs().max() > 1e-2


def test_chunks_grow_with_a_calls_answer_tokens(monkeypatch):
    """A quarter of a call's answer tokens per chunk, between the vocabulary's bounds (at
    Llama-3's 128256: 196 rows up to 784 answer tokens, 512 at 2048, at most 523), and the
    values stay those of the full logits."""
    assert logps_plan.chunk_bounds(128256) == (196, 523)
    assert [logps_plan.chunk_tokens(128256, n) for n in (0, 512, 784, 2048, 8192)] == [196, 196, 196, 512, 523]
    assert LogpsPath(True, "fixed", 5).rows(10_000) == 5  # no bound above: fixed chunks
    seen = []

    def recording(*args, chunk_tokens, **kwargs):
        seen.append(chunk_tokens)
        return streamed_token_logps(*args, chunk_tokens=chunk_tokens, **kwargs)

    import clo_recipes.training.streaming as streaming

    monkeypatch.setattr(streaming, "streamed_token_logps", recording)
    model = tiny_llama()
    for name, param in model.named_parameters():
        param.requires_grad_("self_attn" in name)
    inputs, labels = batch()  # 7 + 3 + 7 = 17 answer tokens
    assert_paths_agree(model, inputs, labels, path=LogpsPath(True, "growing", 2, max_chunk_tokens=3))
    assert seen == [3]  # 17 // 4 = 4, capped at 3
    seen.clear()
    assert_paths_agree(model, inputs, labels, path=LogpsPath(True, "growing", 2, max_chunk_tokens=10))
    assert seen == [4]


def test_choose_path_by_vocabulary_and_probe(monkeypatch):
    small = tiny_llama()
    assert not choose_path(small).streamed  # 300 < STREAM_MIN_VOCAB
    monkeypatch.setattr(logps_plan, "STREAM_MIN_VOCAB", 256)
    gemma = tiny_gemma2(softcap=0.5)
    path = choose_path(gemma)
    assert path.streamed and path.transform == LogitTransform(softcap=0.5)
    assert path.chunk_tokens == logps_plan.CHUNK_ELEMENTS // 300
    assert path.max_chunk_tokens == logps_plan.MAX_CHUNK_ELEMENTS // 300
    # a model that rescales its logits after the head in a way the engine does not know:
    # the probe sees the streamed log-probs differ and keeps the full logits
    odd = tiny_llama(tied=False)
    with torch.no_grad():
        odd.lm_head.weight.mul_(100)  # logits of a few nats, as trained models have
    odd.register_forward_hook(lambda module, args, output: output.__setitem__("logits", output.logits * 0.1) or output)
    path = choose_path(odd)
    assert not path.streamed and "differ" in path.reason


def test_mixed_precision_wrapper_returns_log_probs_not_logits():
    """accelerate's bf16 autocast casts model outputs to fp32 (convert_outputs_to_fp32): the
    streamed head's fp32 log-probs pass through it, and agree with the full path to bf16's
    precision (8 mantissa bits: relative 2**-8 per logit, summed over ~20 answer tokens)."""
    from accelerate import Accelerator

    model = tiny_llama(vocab=300).float()
    for name, param in model.named_parameters():
        param.requires_grad_("self_attn" in name)
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    wrapped = accelerator.prepare(model)
    inputs, labels = batch()
    with accelerator.autocast():
        full = full_answer_logps(wrapped, inputs, labels).sum
        streamed = streamed_answer_logps(wrapped, inputs, labels, LogpsPath(True, "test", 5))
    assert streamed.sum.dtype == torch.float32 and streamed.sum.requires_grad
    assert torch.allclose(streamed.sum, full, rtol=2 ** -6, atol=0)
    streamed.sum.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.lm_head.forward.__func__ is type(model.lm_head).forward  # the head is itself again
