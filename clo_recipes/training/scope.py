"""Which weights train: the attention projections (the paper) or everything, directly or via LoRA.

Attention projections are found by module name, per architecture family:

    Llama, Mistral, Qwen2, Gemma, Phi, OLMo, Cohere, ...  self_attn.{q,k,v,o}_proj
    Phi-3                                                 self_attn.{qkv_proj,o_proj}
    GPT-NeoX, Falcon, BLOOM                               attention|self_attention.{query_key_value,dense}
    GPT-2, Qwen-1, GPT-BigCode                            attn.{c_attn,c_proj}
    OPT, GPT-J, BART-style                                self_attn|attn.{q,k,v,out}_proj
    MPT, Baichuan, InternLM2                              attn.Wqkv/out_proj, self_attn.W_pack, attention.wqkv/wo

A name counts only inside an attention block (`self_attn`, `attn`, `attention`,
`self_attention`), so an MLP's `c_proj` or `dense` never slips in. Unknown layouts raise an
error that lists the linear module names the model has, for `adapter.target_modules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CloError

ATTENTION_BLOCKS = {"self_attn", "attn", "attention", "self_attention"}
ATTENTION_PROJECTIONS = {
    "q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "qkv_proj",
    "query_key_value", "dense", "c_attn", "c_proj", "Wqkv", "W_pack", "wqkv", "wo",
    "query", "key", "value",
}
# Never trained by `all` through LoRA: the output head and embeddings are not LoRA targets.
_NOT_LORA = {"lm_head", "embed_out", "output"}


@dataclass(frozen=True)
class TrainableScope:
    modules: tuple[str, ...]  # qualified names of the linear modules that train ("" = every parameter)
    description: str


def linear_modules(model: Any) -> dict[str, Any]:
    """Qualified name -> module for every linear-like layer (nn.Linear, GPT-2 Conv1D, 4-bit Linear)."""
    import torch

    found = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")
        if is_linear and weight is not None and name:
            found[name] = module
    return found


def attention_modules(model: Any) -> list[str]:
    """Qualified names of the attention projections of `model` (see the module docstring)."""
    names = []
    for name in linear_modules(model):
        parts = name.split(".")
        if len(parts) >= 2 and parts[-1] in ATTENTION_PROJECTIONS and parts[-2] in ATTENTION_BLOCKS:
            names.append(name)
    if not names:
        seen = sorted({name.split(".")[-1] for name in linear_modules(model)})
        architecture = ", ".join(getattr(model.config, "architectures", None) or [type(model).__name__])
        raise CloError(
            f"cannot find the attention projections of {architecture}; linear modules seen: {', '.join(seen)}",
            hint="set adapter.target_modules to the attention module names (e.g. [q_proj, k_proj, v_proj, o_proj]), "
                 "or adapter.trainable: all",
        )
    return names


def select_modules(model: Any, trainable: str, target_modules: list[str] | None, *, lora: bool) -> TrainableScope:
    """The modules that train for `adapter.trainable` / `adapter.target_modules`."""
    if target_modules:
        wanted = set(target_modules)
        names = [name for name in linear_modules(model) if name.split(".")[-1] in wanted or name in wanted]
        if not names:
            seen = sorted({name.split(".")[-1] for name in linear_modules(model)})
            raise CloError(f"adapter.target_modules {sorted(wanted)} match no linear module",
                           hint=f"linear modules seen: {', '.join(seen)}")
        return TrainableScope(tuple(names), f"target_modules ({len(names)} modules)")
    if trainable == "attention":
        names = attention_modules(model)
        return TrainableScope(tuple(names), f"attention projections ({len(names)} modules)")
    if lora:
        names = [name for name in linear_modules(model) if name.split(".")[-1] not in _NOT_LORA]
        return TrainableScope(tuple(names), f"all linear layers ({len(names)} modules)")
    return TrainableScope(("",), "all parameters")


def restrict_trainable(model: Any, scope: TrainableScope) -> list[str]:
    """Full fine-tuning: freeze everything outside `scope`; returns the trainable parameter names."""
    if scope.modules == ("",):
        for param in model.parameters():
            param.requires_grad_(True)
    else:
        prefixes = tuple(name + "." for name in scope.modules)
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(prefixes))
    return [name for name, param in model.named_parameters() if param.requires_grad]


def lora_targets(model: Any, scope: TrainableScope) -> list[str]:
    """PEFT `target_modules`: the short leaf names when they pick exactly the scope's modules
    (readable adapter_config.json), else the qualified names."""
    leaves = sorted({name.split(".")[-1] for name in scope.modules})
    picked = [name for name in linear_modules(model) if name.split(".")[-1] in leaves]
    return leaves if sorted(picked) == sorted(scope.modules) else list(scope.modules)


def apply_adapter(model: Any, adapter: Any, *, gradient_checkpointing: bool = False) -> tuple[Any, TrainableScope]:
    """Make `model` trainable per the recipe's `adapter:` section (full, lora or qlora)."""
    lora = adapter.kind in ("lora", "qlora")
    scope = select_modules(model, adapter.trainable, adapter.target_modules, lora=lora)
    if not lora:
        restrict_trainable(model, scope)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model, scope
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(model, scope)
    # LoRA and QLoRA alike: no `peft.prepare_model_for_kbit_training`, which casts every weight
    # bitsandbytes left unquantized (embeddings, head, norms) to fp32 -- twice their memory and an
    # fp32 residual stream. get_peft_model freezes the base; the weights keep the compute dtype;
    # inputs that require grad let checkpointed blocks backpropagate into the adapters.
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config), scope
