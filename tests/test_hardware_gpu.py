"""On a CUDA GPU: QLoRA loads a small Llama in 4-bit and trains CLO-shaped steps, and the
peak memory it measures is within 20 % of what `plan` estimates. Skipped without CUDA."""

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
    bnb = pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    estimate = estimate_memory(
        read_model_config(ModelSection(base=str(small_llama))), adapter_kind="qlora", trainable="attention",
        method_name="clo", max_length=SEQUENCE, micro_batch_size=1, precision="bf16", quantization="nf4",
        gradient_checkpointing=True, optimizer="paged_adamw_8bit", sharding="none", world_size=1,
        cpu_offload=False, gpu_memory_gb=None, attention="sdpa", lora_rank=16, lora_dropout=0.05)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(small_llama, quantization_config=quantization,
                                                 dtype=torch.bfloat16, attn_implementation="sdpa",
                                                 device_map={"": 0})
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    loaded = (torch.cuda.memory_allocated() - start) / GIB
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=MODULES))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == estimate.trainable_params
    optimizer = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    torch.manual_seed(0)
    ids = torch.randint(0, 32000, (4, SEQUENCE), device="cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = []
    for _ in range(2):  # the second step holds optimizer states and runs at full peak
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
