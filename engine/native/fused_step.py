"""The native decoder's decode step for every layer in one C call (kernels/decode_step.c).

It applies when every matmul of every layer is on the compiled int8 kernel (the int8
scheme's normal case): then the ~30 small torch ops per layer and the 4 kernel calls become
one call per token.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from engine.native import kernel_builder
from engine.native.kernel_builder import pointer
from engine.native.packed_linear import PackedLinear

if TYPE_CHECKING:
    from engine.native.architecture import NativeConfig, NativeLayer
    from engine.native.kv_cache import KVCache
    from engine.native.parts import RMSNorm

_I64, _F32, _P = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
# The step's KV cache: bf16 halves what attention reads per step (in fp32, eight chats' caches
# were as many bytes as the weights) and what a kept conversation holds; activations stay fp32.
KV_DTYPE = torch.bfloat16


class DecoderShape(ctypes.Structure):
    """DecoderShape in decode_step.c."""

    _fields_ = [
        *((name, _I64) for name in ("hidden", "heads", "kv_heads", "head_dim")),
        *((name, _I64) for name in ("intermediate", "layers")),
        ("hidden_floor", _F32),
        ("head_floor", _F32),
    ]


class DecoderLayer(ctypes.Structure):
    """DecoderLayer in decode_step.c."""

    _fields_ = [
        (name, _P)
        for name in (
            "attn_norm",
            "qk_norm",
            "mlp_norm",
            "qkv",
            "out",
            "gate_up",
            "down",
            "qkv_scales",
            "out_scales",
            "gate_up_scales",
            "down_scales",
            "qkv_bias",
            "out_bias",
        )
    ] + [(name, _I64) for name in ("qkv_bits", "out_bits", "gate_up_bits", "down_bits")]


class SequenceSlot(ctypes.Structure):
    """SequenceSlot in decode_step.c: one sequence's cache and its new token's rotation."""

    _fields_ = [
        ("keys", _P),
        ("values", _P),
        ("capacity", _I64),
        ("position", _I64),
        ("cos", _P),
        ("sin", _P),
    ]


def _optional(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else pointer(tensor)


def _floor(norm: RMSNorm) -> float:
    """n * eps: RMSNorm keeps its square root."""
    return float(norm.floor) ** 2


class FusedDecodeStep:
    """Runs one token through all layers in C; the tensors it points at stay owned here."""

    def __init__(self, config: NativeConfig, layers: Sequence[NativeLayer]) -> None:
        self._library = kernel_builder.kernels()
        first = layers[0]
        gate_up = first.gate_up
        assert isinstance(gate_up, PackedLinear)  # checked by fused_decode_step
        self.shape = DecoderShape(
            hidden=config.hidden_size,
            heads=config.heads,
            kv_heads=config.kv_heads,
            head_dim=config.head_dim,
            intermediate=gate_up.out_features // 2,
            layers=len(layers),
            hidden_floor=_floor(first.attn_norm),
            head_floor=_floor(first.qk_norm) if first.qk_norm is not None else 0.0,
        )
        self._keep: list[torch.Tensor] = []  # contiguous copies the structs point into
        self.layers = (DecoderLayer * len(layers))(*(self._layer(layer) for layer in layers))

    def _tensor(self, tensor: torch.Tensor) -> int:
        tensor = tensor.float().contiguous()
        self._keep.append(tensor)
        return pointer(tensor)

    def _layer(self, layer: NativeLayer) -> DecoderLayer:
        linears = {name: getattr(layer, name) for name in ("qkv", "out", "gate_up", "down")}
        fields: dict[str, int | None] = {}
        bits: dict[str, int] = {}
        for name, linear in linears.items():
            assert isinstance(linear, PackedLinear)  # checked by fused_decode_step
            fields[name] = pointer(linear.weight.packed)
            fields[f"{name}_scales"] = pointer(linear.weight.scales)
            bits[f"{name}_bits"] = linear.weight.bits
        return DecoderLayer(
            attn_norm=self._tensor(layer.attn_norm.weight),
            qk_norm=None if layer.qk_norm is None else self._tensor(layer.qk_norm.weight),
            mlp_norm=self._tensor(layer.mlp_norm.weight),
            qkv_bias=_optional(linears["qkv"].bias),
            out_bias=_optional(linears["out"].bias),
            **fields,
            **bits,
        )

    def position_heads(
        self, index: int, qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        """A prompt chunk's query and key heads [T, heads + kv_heads, head_dim] normalised
        (for Qwen3) and rotated by cos, sin [T, head_dim] in C, as the decode step does
        them -> fp32, the same shape."""
        qk = qk.float().contiguous()
        layer = ctypes.addressof(self.layers) + index * ctypes.sizeof(DecoderLayer)
        status = self._library.qb_position_heads(
            ctypes.addressof(self.shape), layer, pointer(qk), qk.shape[0], pointer(cos),
            pointer(sin), torch.get_num_threads(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("positioning heads could not allocate its scratch memory")
        return qk

    def norm_rows(self, index: int, norm: str, x: torch.Tensor) -> torch.Tensor:
        """Prompt rows x [T, hidden] fp32 -> RMS-normalised by layer `index`'s `norm`
        ("attn_norm" or "mlp_norm") as the decode step does it, in bf16 for the matmul."""
        x = x.float().contiguous()
        out = torch.empty(x.shape, dtype=torch.bfloat16)
        self._library.qb_rms_norm_rows(
            pointer(x), x.shape[0], x.shape[1], getattr(self.layers[index], norm),
            self.shape.hidden_floor, pointer(out), torch.get_num_threads(),
        )  # fmt: skip
        return out

    def prompt_attention(
        self, index: int, queries: torch.Tensor, cache: KVCache, out: torch.Tensor
    ) -> None:
        """A prompt chunk's causal attention in C, as its decode steps would compute it:
        queries [T, heads, head_dim] fp32 (rotated, scaled) at the positions after
        cache.length, whose keys and values layer `index` already holds -> out [T, heads *
        head_dim] (fp32, contiguous). torch's flash attention took twice as long over a long
        history."""
        shape = self.shape
        count = queries.shape[0]
        queries = queries.float().contiguous()
        if out.dtype != torch.float32 or not out.is_contiguous():
            raise TypeError("prompt attention writes contiguous fp32 rows")
        layer = shape.kv_heads * cache.capacity * shape.head_dim * cache.keys.element_size()
        status = self._library.qb_prompt_attention(
            pointer(queries), pointer(cache.keys) + index * layer,
            pointer(cache.values) + index * layer, shape.heads, shape.kv_heads, shape.head_dim,
            cache.capacity, cache.length, count, pointer(out), torch.get_num_threads(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("prompt attention could not allocate its scratch memory")

    def __call__(
        self,
        x: torch.Tensor,
        caches: Sequence[KVCache],
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """x [B, hidden] fp32, each row's token embedding -> their last hidden states (in
        place); row b's keys and values go to caches[b] at positions[b] (default: its
        length; room reserved), rotated by cos[b], sin[b] ([B, head_dim]). Rows may share a
        cache at consecutive positions: every row's keys and values are written before any
        row attends, so each sees the ones before it (a sequence's drafted tokens)."""
        if x.dtype != torch.float32 or any(c.keys.dtype != KV_DTYPE for c in caches):
            raise TypeError("the fused decode step takes fp32 activations and a bf16 cache")
        x, cos, sin = x.contiguous(), cos.contiguous(), sin.contiguous()
        row = cos.stride(0) * cos.element_size()
        slots = (SequenceSlot * len(caches))(
            *(
                SequenceSlot(
                    keys=pointer(cache.keys),
                    values=pointer(cache.values),
                    capacity=cache.capacity,
                    position=cache.length if positions is None else positions[index],
                    cos=pointer(cos) + index * row,
                    sin=pointer(sin) + index * row,
                )
                for index, cache in enumerate(caches)
            )
        )
        status = self._library.qb_decode_step(
            ctypes.addressof(self.shape),
            ctypes.addressof(self.layers),
            len(caches),
            pointer(x),
            ctypes.addressof(slots),
            torch.get_num_threads(),
        )
        if status != 0:
            raise MemoryError("the decode step could not allocate its scratch memory")
        return x


def fused_decode_step(
    config: NativeConfig, layers: Sequence[NativeLayer], dtype: torch.dtype
) -> FusedDecodeStep | None:
    """The fused step when this decoder can take it: fp32 activations and the cache, and
    every layer's matmuls on the compiled kernel (each in 8 or 4 bits)."""
    names = ("qkv", "out", "gate_up", "down")
    linears = [getattr(layer, name) for layer in layers for name in names]
    if not all(isinstance(linear, PackedLinear) for linear in linears) or dtype != torch.float32:
        return None
    if not layers:
        return None
    return FusedDecodeStep(config, layers)
