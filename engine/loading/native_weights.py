"""Build a NativeDecoder from checkpoint tensors, quantising each as it is read.

Tensors come one at a time by their transformers names (loading/checkpoint.py), so the
process never holds the float checkpoint and its quantised copy at once: peak memory stays
near the quantised size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from engine.loading.checkpoint import TensorFetch
from engine.native.architecture import NativeConfig, NativeLayer
from engine.native.block_weights import StackedBlocks, full_precision
from engine.native.linear import (
    LinearFactory,
    LinearKernel,
    Scheme,
    activation_dtype,
    int8_rows,
    linear_factory,
)
from engine.native.model import NativeDecoder
from engine.native.packed_linear import BlockQuantized, PackedLinear, packed_fits
from engine.native.parts import Embedding, RMSNorm, RotaryTable, rope_frequencies

Progress = Callable[[float], None]  # fraction of layers built, 0..1


Matrix = torch.Tensor | BlockQuantized


def _required(fetch: TensorFetch, name: str) -> Matrix:
    tensor = fetch(name)
    if tensor is None:
        raise KeyError(f"checkpoint has no tensor '{name}'")
    return tensor


def _norm(fetch: TensorFetch, name: str) -> torch.Tensor:
    """A norm's weight, as floats."""
    return full_precision(_required(fetch, name))


def _bias(fetch: TensorFetch, name: str) -> torch.Tensor | None:
    """A bias as floats, or None when the layer has none."""
    tensor = fetch(name)
    return None if tensor is None else full_precision(tensor)


def _fused(
    fetch: TensorFetch, names: list[str], factors: list[float] | None = None
) -> tuple[Matrix, torch.Tensor | None]:
    """Concatenate projections along the output dimension (one kernel call instead of 2-3),
    each scaled by its factor; block-quantised ones stay in blocks."""
    weights = [_required(fetch, f"{name}.weight") for name in names]
    biases = [_bias(fetch, f"{name}.bias") for name in names]
    factors = factors or [1.0] * len(names)
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat(
            [
                b.float() * f if b is not None else torch.zeros(w.shape[0])
                for b, w, f in zip(biases, weights, factors, strict=True)
            ]
        )
    tensors = [w for w in weights if isinstance(w, torch.Tensor)]
    if len(tensors) < len(weights):  # blocks from a GGUF file: stacked as they are
        return StackedBlocks(weights, factors), bias
    stacked = torch.cat(tensors)
    if any(f != 1.0 for f in factors):
        stacked = stacked.float()  # 1/sqrt(128) is not exact in bf16
        top = 0
        for w, f in zip(tensors, factors, strict=True):
            stacked[top : top + w.shape[0]] *= f
            top += w.shape[0]
    return stacked, bias


def build_decoder(
    hf_config: Any,
    fetch: TensorFetch,
    *,
    scheme: Scheme,
    dtype: torch.dtype,
    reduce_range: bool,
    progress: Progress = lambda fraction: None,
) -> NativeDecoder:
    """Read every tensor through fetch and build the decoder for this scheme."""
    config = NativeConfig.from_transformers(hf_config)
    act = activation_dtype(scheme, dtype)
    make = linear_factory(scheme, dtype, reduce_range)
    # The embedding goes first: its float table (the largest tensor) and its quantised copy
    # then meet in memory before the layers are there, which lowers the peak by ~0.4 GB.
    embedding, head = _embedding_and_head(fetch, config, scheme, act, make)
    layers = [
        _layer(fetch, f"model.layers.{i}", config, make, act, progress, i)
        for i in range(config.layers)
    ]
    inv_freq, scaling = rope_frequencies(hf_config, config.head_dim)
    final_norm = RMSNorm(_norm(fetch, "model.norm.weight"), config.rms_eps, act)
    progress(1.0)
    return NativeDecoder(
        config, embedding, layers, final_norm, head, RotaryTable(inv_freq, scaling, act), act
    )


def _embedding_and_head(
    fetch: TensorFetch,
    config: NativeConfig,
    scheme: Scheme,
    act: torch.dtype,
    make: LinearFactory,
) -> tuple[Embedding, LinearKernel]:
    """The input embedding (int8 rows unless dense) and the output head, sharing one
    quantisation when the model ties them; the order keeps the peak memory low."""
    embed = _required(fetch, "model.embed_tokens.weight")
    separate_head = None if config.tied_embeddings else fetch("lm_head.weight")
    if scheme == "none":
        head_weight = embed if separate_head is None else separate_head
        return Embedding(full_precision(embed), act), make(full_precision(head_weight), None)
    head = None
    if separate_head is not None:
        head = make(separate_head, None)
        del separate_head
    elif scheme in {"int4", "int8"} and packed_fits(embed.shape):
        head = make(embed, None)  # packed from the float weight: one table serves both
        assert isinstance(head, PackedLinear)
        return Embedding(head.weight, act), head
    rows = int8_rows(full_precision(embed))
    del embed  # the bf16 table goes before the head is packed
    if head is None:
        head = make(rows, None)  # int8 schemes share the embedding's int8 rows
    return Embedding(rows, act), head


def _layer(  # noqa: PLR0917  (private; one call site)
    fetch: TensorFetch,
    prefix: str,
    config: NativeConfig,
    make: LinearFactory,
    act: torch.dtype,
    progress: Progress,
    index: int,
) -> NativeLayer:
    attn, mlp = f"{prefix}.self_attn", f"{prefix}.mlp"
    # Attention's 1/sqrt(head_dim) is folded into the queries: into Qwen3's q_norm weight,
    # else into q_proj's rows (per-row quantisation scales absorb it exactly; a GGUF file's
    # block scales are rounded to fp16 again, a relative 2^-11).
    query_scale = config.head_dim**-0.5
    q_factor = 1.0 if config.qk_norm else query_scale
    qkv = make(*_fused(fetch, [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"],
                       [q_factor, 1.0, 1.0]))  # fmt: skip
    out = make(_required(fetch, f"{attn}.o_proj.weight"), _bias(fetch, f"{attn}.o_proj.bias"))
    gate_up = make(*_fused(fetch, [f"{mlp}.gate_proj", f"{mlp}.up_proj"]))
    down = make(_required(fetch, f"{mlp}.down_proj.weight"), None)
    qk_norm = None
    if config.qk_norm:
        q_norm = _norm(fetch, f"{attn}.q_norm.weight").float() * query_scale
        k_norm = _norm(fetch, f"{attn}.k_norm.weight").float()
        stacked = torch.cat([q_norm.expand(config.heads, -1), k_norm.expand(config.kv_heads, -1)])
        qk_norm = RMSNorm(stacked, config.rms_eps, act)
    progress((index + 1) / (config.layers + 1))
    eps = config.rms_eps
    return NativeLayer(
        attn_norm=RMSNorm(_norm(fetch, f"{prefix}.input_layernorm.weight"), eps, act),
        qkv=qkv,
        qk_norm=qk_norm,
        out=out,
        mlp_norm=RMSNorm(_norm(fetch, f"{prefix}.post_attention_layernorm.weight"), eps, act),
        gate_up=gate_up,
        down=down,
    )
