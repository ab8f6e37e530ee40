"""Parameter counts of a decoder-only transformer from its config, split the way training
splits them: attention projections (what CLO trains), MLP, embeddings and output head.

Covers the Llama family and its relatives (Mistral, Qwen2, Gemma, Phi-3, SmolLM, ...):
pre-norm blocks, grouped-query attention, gated (SwiGLU) or plain MLPs, optional MoE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Families whose MLP is up -> activation -> down (two matrices) rather than gated (three).
_PLAIN_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "starcoder2", "gpt_bigcode"}
# Families with biases on the q/k/v projections.
_QKV_BIAS = {"qwen2", "qwen2_moe"}
# Families that RMS-normalise queries and keys per head.
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2"}


@dataclass(frozen=True)
class Architecture:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    gated_mlp: bool = True
    qkv_bias: bool = False
    experts: int = 0  # MoE: experts per layer (0: dense)
    expert_intermediate: int = 0
    active_experts: int = 0  # MoE: experts each token is routed to
    qk_norm: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Architecture":
        # multimodal wrappers (Gemma 3, Llama 4, ...) keep the language model in text_config
        config = {**config, **config["text_config"]} if isinstance(config.get("text_config"), dict) else config
        try:
            hidden = int(config.get("hidden_size") or config["n_embd"])
            layers = int(config.get("num_hidden_layers") or config["n_layer"])
            heads = int(config.get("num_attention_heads") or config["n_head"])
            vocab = int(config["vocab_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"model config lacks {exc}") from None
        model_type = str(config.get("model_type", ""))
        experts = int(config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts") or 0)
        return cls(
            hidden=hidden,
            layers=layers,
            intermediate=int(config.get("intermediate_size") or config.get("n_inner") or 4 * hidden),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=vocab,
            tied_embeddings=bool(config.get("tie_word_embeddings", True)),
            gated_mlp=model_type not in _PLAIN_MLP,
            qkv_bias=bool(config.get("attention_bias")) or model_type in _QKV_BIAS,
            experts=experts,
            expert_intermediate=int(config.get("moe_intermediate_size") or config.get("intermediate_size") or 0)
            if experts else 0,
            active_experts=int(config.get("num_experts_per_tok") or 2) if experts else 0,
            qk_norm=model_type in _QK_NORM,
        )

    # ------------------------------------------------------------------ shapes
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def attention_linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each attention projection in one layer."""
        return {"q_proj": (self.hidden, self.q_dim), "k_proj": (self.hidden, self.kv_dim),
                "v_proj": (self.hidden, self.kv_dim), "o_proj": (self.q_dim, self.hidden)}

    def mlp_linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each MLP projection in one layer (all experts together)."""
        if self.experts:
            width, copies = self.expert_intermediate, self.experts
        else:
            width, copies = self.intermediate, 1
        shapes = {"up_proj": (self.hidden, width * copies), "down_proj": (width * copies, self.hidden)}
        if self.gated_mlp:
            shapes["gate_proj"] = (self.hidden, width * copies)
        return shapes

    @property
    def mlp_width_per_token(self) -> int:
        """MLP hidden width one token passes through (MoE: its routed experts only)."""
        return self.expert_intermediate * self.active_experts if self.experts else self.intermediate

    # ------------------------------------------------------------------ counts
    @property
    def attention_params_per_layer(self) -> int:
        weights = sum(i * o for i, o in self.attention_linears().values())
        return weights + (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0)

    @property
    def mlp_params_per_layer(self) -> int:
        router = self.hidden * self.experts
        return sum(i * o for i, o in self.mlp_linears().values()) + router

    @property
    def attention_params(self) -> int:
        return self.layers * self.attention_params_per_layer

    @property
    def linear_params(self) -> int:
        """Weights inside the decoder blocks' linear layers (what 4-bit quantization replaces)."""
        return self.layers * (self.attention_params_per_layer + self.mlp_params_per_layer)

    @property
    def embedding_params(self) -> int:
        """Input embedding plus output head (one matrix when tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden + (2 * self.head_dim * self.layers if self.qk_norm else 0)

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    @property
    def layer_params(self) -> int:
        return self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden + (
            2 * self.head_dim if self.qk_norm else 0)

    def lora_params(self, modules: list[str], rank: int) -> int:
        shapes = {**self.attention_linears(), **self.mlp_linears()}
        return self.layers * sum(rank * (shapes[m][0] + shapes[m][1]) for m in modules if m in shapes)
