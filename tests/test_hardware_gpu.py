"""On a CUDA GPU: the engine's QLoRA path (training.loading + training.scope, as the train stage
runs it) loads a small Llama in 4-bit and trains CLO-shaped steps in train mode (so gradient
checkpointing is on), and the peak memory it measures is within 20 % of what `plan` estimates.
Skipped without CUDA (tests/test_training_qlora.py runs the same path on CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from clo_recipes.hardware.memory import CUDA_CONTEXT_GB, GIB, estimate_memory, read_model_config  # noqa: E402
from clo_recipes.recipe.schema.model import ModelSection  # noqa: E402

SEQUENCE = 512  # tokens per sequence; one CLO sample = 4 sequences
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory):
    """A ~160M-parameter Llama with random weights, saved like a hub checkpoint (bf16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("small-llama")
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
                         num_hidden_layers=8, vocab_size=32000, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    return folder


def _clo_loss(logits, labels, beta=0.1):
    """The training stage's answer log-probs (what the estimate models), then the CLO objective
    over (en: chosen, rejected), (target: chosen, rejected) with a zero reference."""
    from clo_recipes.methods.logps import answer_logps

    en_chosen, en_rejected, target_chosen, target_rejected = answer_logps(logits, labels).sum
    preference = -(torch.nn.functional.logsigmoid(beta * (en_chosen - en_rejected))
                   + torch.nn.functional.logsigmoid(beta * (target_chosen - target_rejected))) / 2
    nll = -target_chosen / (labels.shape[1] - 1)
    return 0.5 * nll + 0.5 * preference


def test_qlora_trains_and_peak_memory_matches_the_estimate(small_llama):
    pytest.importorskip("bitsandbytes")
    from clo_recipes.recipe.schema.adapter import AdapterSection
    from clo_recipes.training.loading import load_model
    from clo_recipes.training.optimizers import build_optimizer
    from clo_recipes.training.scope import apply_adapter

    estimate = estimate_memory(
        read_model_config(ModelSection(base=str(small_llama))), adapter_kind="qlora", trainable="attention",
        method_name="clo", max_length=SEQUENCE, micro_batch_size=1, precision="bf16", quantization="nf4",
        gradient_checkpointing=True, optimizer="adamw_8bit", sharding="none", world_size=1,
        cpu_offload=False, gpu_memory_gb=None, attention="sdpa", lora_rank=16, lora_dropout=0.05)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    model = load_model(ModelSection(base=str(small_llama)), precision="bf16", attention="sdpa", quantization="nf4",
                       for_training=True)
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    loaded = (torch.cuda.memory_allocated() - start) / GIB
    model, _ = apply_adapter(model, AdapterSection(kind="qlora", r=16, alpha=32, dropout=0.05),
                             gradient_checkpointing=True)
    model.train()  # from_pretrained leaves eval mode, where checkpointing is off
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for _, param in named:  # fp32 adapter weights, as the training loop keeps them
        param.data = param.data.float()
    assert sum(p.numel() for _, p in named) == estimate.trainable_params
    # not paged: a paged optimizer lives in CUDA managed memory, which the allocator does not count
    optimizer = build_optimizer(named, "adamw_8bit", 1e-4, 0.0)

    torch.manual_seed(0)
    ids = torch.randint(0, 32000, (4, SEQUENCE), device="cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = []
    for _ in range(2):  # the second step holds optimizer states and runs at full peak
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = _clo_loss(model(input_ids=ids).logits, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_reserved() - start) / GIB

    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)
    assert loaded == pytest.approx(estimate.breakdown["weights"], rel=0.2)
    # the estimate's fixed CUDA context lies outside PyTorch's allocator
    expected = estimate.total_gb - CUDA_CONTEXT_GB
    print(f"\nQLoRA peak: measured {peak:.3f} GiB (weights {loaded:.3f}), estimated {expected:.3f} GiB "
          f"{estimate.breakdown}")
    assert peak == pytest.approx(expected, rel=0.2)
