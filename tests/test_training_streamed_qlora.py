"""A 4-bit (QLoRA) model loaded for training stays trainable exactly as it was through the
eval-mode, no-grad forwards it meets before and between training phases: the streamed
log-prob path's setup probe and the reference log-probs (the reference stage, `sft+dpo`'s
second phase). bitsandbytes repacks a 4-bit weight for its CPU inference kernel (no backward)
on such a forward on CPUs with AVX512-BF16, unless the loader switched that off
(`training.loading._keep_4bit_layout`). On CPUs without those instructions the test still
runs and must still pass."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def four_bit_folder(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # vocabulary at the streaming threshold (32,768), so choose_path runs its probe;
    # hidden 64: bitsandbytes' CPU kernels quantize in blocks of 64 along the input features
    config = LlamaConfig(vocab_size=32768, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    folder = tmp_path_factory.mktemp("four-bit") / "model"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    return folder


def lora_gradients(model, ids, labels) -> dict[str, torch.Tensor]:
    from clo_recipes.methods.logps import answer_logps

    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, use_cache=False).logits
    answer_logps(logits, labels).sum.sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_eval_forwards_leave_every_4bit_layer_trainable(four_bit_folder):
    from clo_recipes.methods.logps import IGNORE_INDEX
    from clo_recipes.recipe.schema.adapter import AdapterSection
    from clo_recipes.recipe.schema.model import ModelSection
    from clo_recipes.training.loading import load_model
    from clo_recipes.training.scope import apply_adapter
    from clo_recipes.training.streaming import choose_path

    model = load_model(ModelSection(base=str(four_bit_folder)), precision="bf16", quantization="nf4",
                       for_training=True)
    model, _ = apply_adapter(model, AdapterSection(kind="qlora", r=4, alpha=8, dropout=0.0))
    for name, param in model.named_parameters():
        if param.requires_grad:  # fp32 masters, as training.loop keeps them; B nonzero so A gets gradients
            param.data = torch.randn_like(param, dtype=torch.float32) * 0.1 if "lora_B" in name else param.data.float()
    ids = torch.randint(0, 32768, (2, 12), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    before = lora_gradients(model, ids, labels)
    path = choose_path(model, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert path.streamed, path.reason
    model.eval()  # as training.reference.compute_reference runs the model
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, use_cache=False)
    repacked = [name for name, m in model.named_modules()
                if getattr(getattr(getattr(m, "weight", None), "quant_state", None), "packing_format_for_cpu", False)]
    assert repacked == []
    after = lora_gradients(model, ids, labels)
    first_layer = [name for name in before if ".layers.0." in name and "lora_A" in name]
    assert first_layer and all(before[name].abs().sum() > 0 for name in first_layer)
    for name, gradient in before.items():  # the same computation before and after: equal bits
        assert torch.equal(after[name], gradient), name
