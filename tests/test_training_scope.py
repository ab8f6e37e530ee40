"""Trainable scope: attention projections per architecture, and gradients reach exactly them."""

import pytest
import torch

from clo_recipes.errors import CloError
from clo_recipes.recipe.schema.adapter import AdapterSection
from clo_recipes.training.scope import apply_adapter, attention_modules

TINY = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)

# (config class, extra kwargs, expected attention leaf names in one layer)
ARCHITECTURES = {
    "llama": ("LlamaConfig", {"num_key_value_heads": 1}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "mistral": ("MistralConfig", {"num_key_value_heads": 1}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 1}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "gemma": ("GemmaConfig", {"num_key_value_heads": 1, "head_dim": 8}, {"q_proj", "k_proj", "v_proj", "o_proj"}),
    "phi3": ("Phi3Config", {"num_key_value_heads": 2, "pad_token_id": 0}, {"qkv_proj", "o_proj"}),
    "gpt_neox": ("GPTNeoXConfig", {}, {"query_key_value", "dense"}),
    "falcon": ("FalconConfig", {"new_decoder_architecture": False}, {"query_key_value", "dense"}),
    "gpt2": ("GPT2Config", {"n_embd": 16, "n_layer": 2, "n_head": 2}, {"c_attn", "c_proj"}),
    "opt": ("OPTConfig", {"ffn_dim": 32, "word_embed_proj_dim": 16}, {"q_proj", "k_proj", "v_proj", "out_proj"}),
}


def tiny_model(kind: str):
    import transformers

    config_name, extra, _ = ARCHITECTURES[kind]
    config = getattr(transformers, config_name)(**TINY, **extra)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("kind", sorted(ARCHITECTURES))
def test_attention_projections_found_per_architecture(kind):
    model = tiny_model(kind)
    names = attention_modules(model)
    expected = ARCHITECTURES[kind][2]
    assert {name.split(".")[-1] for name in names} == expected
    assert len(names) == 2 * len(expected)  # two layers, nothing from the MLP
    assert not any(".mlp." in name for name in names)


def test_unknown_architecture_lists_module_names():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = torch.nn.Linear(4, 4)
            self.ffn_up = torch.nn.Linear(4, 8)

    model = torch.nn.Sequential(Block())
    model.config = type("Config", (), {"architectures": ["MambaForCausalLM"]})()
    with pytest.raises(CloError) as error:
        attention_modules(model)
    assert "MambaForCausalLM" in str(error.value)
    assert "ffn_up" in str(error.value) and "mixer" in str(error.value)
    assert "target_modules" in error.value.problems[0].hint


def grads_after_one_backward(model):
    ids = torch.randint(0, 64, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    return {name for name, param in model.named_parameters() if param.grad is not None and param.grad.abs().sum() > 0}


def test_full_attention_scope_gets_exactly_attention_gradients():
    model, scope = apply_adapter(tiny_model("llama"), AdapterSection(kind="full", trainable="attention"))
    expected = {f"{name}.weight" for name in scope.modules}
    assert len(expected) == 8
    assert grads_after_one_backward(model) == expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected


def test_full_all_scope_trains_every_parameter():
    model, _ = apply_adapter(tiny_model("llama"), AdapterSection(kind="full", trainable="all"))
    assert grads_after_one_backward(model) == {name for name, _ in model.named_parameters()}


def test_lora_follows_the_scope():
    model, scope = apply_adapter(tiny_model("gpt2"), AdapterSection(kind="lora", trainable="attention", r=2, alpha=4))
    with torch.no_grad():  # LoRA B starts at zero; make both factors receive gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    grads = grads_after_one_backward(model)
    assert grads and all("lora_" in name for name in grads)
    adapted = {name.split(".lora_")[0].replace("base_model.model.", "") for name in grads}
    assert adapted == set(scope.modules)
    assert not any("mlp" in name for name in adapted)  # GPT-2's mlp.c_proj shares the leaf name


def test_lora_all_targets_every_linear_but_the_head():
    model, scope = apply_adapter(tiny_model("llama"), AdapterSection(kind="lora", trainable="all", r=2))
    leaves = {name.split(".")[-1] for name in scope.modules}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert sorted(model.peft_config["default"].target_modules) == sorted(leaves)


def test_explicit_target_modules_override():
    model, scope = apply_adapter(tiny_model("llama"), AdapterSection(kind="full", target_modules=["q_proj", "v_proj"]))
    assert {name.split(".")[-1] for name in scope.modules} == {"q_proj", "v_proj"}
    assert grads_after_one_backward(model) == {f"{name}.weight" for name in scope.modules}
    with pytest.raises(CloError, match="match no linear module"):
        apply_adapter(tiny_model("llama"), AdapterSection(kind="full", target_modules=["wq"]))
