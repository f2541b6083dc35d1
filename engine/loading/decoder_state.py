"""A built native decoder as named tensors and back (what the packed-weights cache keeps).

Only decoders on the compiled packed kernel are kept (the int8 and int4 schemes, and GGUF
files' own blocks): their weights are plain tensors that can be mapped from a file as they
are. fbgemm's prepacked weights and dense bf16 cannot, and need no packing anyway.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.native.architecture import NativeConfig, NativeLayer
from engine.native.linear import Int8Rows
from engine.native.model import NativeDecoder
from engine.native.packed_linear import PackedLinear, PackedWeights
from engine.native.parts import Embedding, RMSNorm, RotaryTable, rope_frequencies

LINEARS = ("qkv", "out", "gate_up", "down")
NORMS = ("attn_norm", "mlp_norm", "qk_norm")
State = tuple[dict[str, Any], dict[str, torch.Tensor]]


def decoder_state(decoder: NativeDecoder) -> State | None:
    """(meta, tensors) of a decoder on the packed kernel, or None for any other kind."""
    head, embedding = decoder.head, decoder.embedding
    linears = [getattr(layer, name) for layer in decoder.layers for name in LINEARS]
    if not all(isinstance(linear, PackedLinear) for linear in [*linears, head]):
        return None
    assert isinstance(head, PackedLinear)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"dtype": str(decoder.dtype), "linears": {}}
    if embedding.packed is not None:
        if embedding.packed is not head.weight:
            return None
        meta["embedding"] = "head"  # a tied head's packed rows serve as the embedding
    elif embedding.scales is not None:
        meta["embedding"] = "int8 rows"
        tensors["embedding.table"], tensors["embedding.scales"] = embedding.table, embedding.scales
    else:
        return None
    _linear(meta, tensors, "head", head)
    for index, layer in enumerate(decoder.layers):
        for name in LINEARS:
            _linear(meta, tensors, f"{index}.{name}", getattr(layer, name))
        for name in NORMS:
            norm = getattr(layer, name)
            if norm is not None:
                tensors[f"{index}.{name}"], tensors[f"{index}.{name}.floor"] = (
                    norm.weight,
                    norm.floor,
                )
    tensors["final_norm"], tensors["final_norm.floor"] = (
        decoder.final_norm.weight,
        decoder.final_norm.floor,
    )
    return meta, tensors


def _linear(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], name: str, linear: PackedLinear
) -> None:
    weights = linear.weight
    meta["linears"][name] = [weights.bits, weights.out_features, weights.in_features]
    tensors[f"{name}.packed"], tensors[f"{name}.scales"] = weights.packed, weights.scales
    if linear.bias is not None:
        tensors[f"{name}.bias"] = linear.bias


def decoder_from_state(
    hf_config: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> NativeDecoder:
    """Rebuild the decoder decoder_state described (for the same model and settings)."""
    config = NativeConfig.from_transformers(hf_config)
    act = torch.float32  # the packed kernel's activations (activation_dtype)
    if meta["dtype"] != str(act):
        raise ValueError(f"kept for {meta['dtype']} activations, not {act}")

    def linear(name: str) -> PackedLinear:
        bits, n, k = meta["linears"][name]
        weights = PackedWeights(tensors[f"{name}.packed"], tensors[f"{name}.scales"], bits, n, k)
        return PackedLinear(weights, tensors.get(f"{name}.bias"), bits)

    def norm(name: str) -> RMSNorm:
        return RMSNorm.prepared(tensors[name], tensors[f"{name}.floor"], act)

    head = linear("head")
    if meta["embedding"] == "head":
        embedding = Embedding(head.weight, act)
    else:
        embedding = Embedding(
            Int8Rows(tensors["embedding.table"], tensors["embedding.scales"]), act
        )
    layers = [
        NativeLayer(
            attn_norm=norm(f"{i}.attn_norm"),
            qkv=linear(f"{i}.qkv"),
            qk_norm=norm(f"{i}.qk_norm") if f"{i}.qk_norm" in tensors else None,
            out=linear(f"{i}.out"),
            mlp_norm=norm(f"{i}.mlp_norm"),
            gate_up=linear(f"{i}.gate_up"),
            down=linear(f"{i}.down"),
        )
        for i in range(config.layers)
    ]
    inv_freq, scaling = rope_frequencies(hf_config, config.head_dim)
    return NativeDecoder(
        config,
        embedding,
        layers,
        norm("final_norm"),
        head,
        RotaryTable(inv_freq, scaling, act),
        act,
    )
