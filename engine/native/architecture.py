"""The architectures the native decoder implements: a model's shape, read and checked from
its transformers config, and the weights one of its layers holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.native.linear import LinearKernel
from engine.native.parts import RMSNorm, UnsupportedArchitecture

SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True)
class NativeConfig:
    """The shape of a Llama-family decoder, read from a transformers config."""

    model_type: str
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_eps: float
    tied_embeddings: bool
    qk_norm: bool  # Qwen3 normalises each head's queries and keys
    max_positions: int

    @classmethod
    def from_transformers(cls, config: Any) -> NativeConfig:
        """Check the config is one we implement exactly, and read its shape."""
        model_type = getattr(config, "model_type", "?")
        if model_type not in SUPPORTED_TYPES:
            raise UnsupportedArchitecture(f"model type '{model_type}'")
        activation = getattr(config, "hidden_act", "silu")
        if activation != "silu":
            raise UnsupportedArchitecture(f"activation '{activation}'")
        # Qwen configs carry a sliding window they do not use; Mistral's is real.
        if model_type == "mistral" and getattr(config, "sliding_window", None):
            raise UnsupportedArchitecture("sliding-window attention")
        heads = config.num_attention_heads
        return cls(
            model_type=model_type,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rms_eps=config.rms_norm_eps,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            qk_norm=model_type == "qwen3",
            max_positions=int(getattr(config, "max_position_embeddings", 0) or 32768),
        )


@dataclass
class NativeLayer:
    """One decoder block's weights."""

    attn_norm: RMSNorm
    qkv: LinearKernel  # the query rows are pre-scaled by head_dim ** -0.5
    qk_norm: RMSNorm | None  # [heads + kv_heads, D]: Qwen3's q_norm and k_norm, stacked
    out: LinearKernel
    mlp_norm: RMSNorm
    gate_up: LinearKernel
    down: LinearKernel
