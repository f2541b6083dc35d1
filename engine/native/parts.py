"""The small pieces of the native decoder: rotary table, RMSNorm, rotation, embedding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from engine.native.block_weights import full_precision
from engine.native.linear import Int8Rows, Weight
from engine.native.packed_linear import PackedWeights


class UnsupportedArchitecture(ValueError):
    """The model is not one the native decoder implements; transformers runs it instead."""


def rope_frequencies(config: Any, head_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [head_dim / 2] and attention scaling, for any rope type
    transformers knows (default, llama3, yarn, ...)."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    parameters = dict(parameters or {})
    rope_type = parameters.get("rope_type") or parameters.get("type") or "default"
    if rope_type == "default":
        theta = parameters.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
        return (1.0 / (float(theta) ** exponents)).float(), 1.0
    # Imported here: it pulls in transformers' model code (~0.4 s) for the rare rope types.
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: PLC0415

    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise UnsupportedArchitecture(f"rope type '{rope_type}'")
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    return inv_freq.float(), float(scaling)


class RotaryTable:
    """cos/sin per position, computed once for the positions in use.

    sin is stored sign-folded ([-sin, sin]) so a rotation is roll, mul and addcmul.
    """

    def __init__(self, inv_freq: torch.Tensor, scaling: float, dtype: torch.dtype) -> None:
        self.inv_freq = inv_freq
        self.scaling = scaling
        self.dtype = dtype
        self.cos = torch.empty(0, inv_freq.numel() * 2, dtype=dtype)
        self.sin = torch.empty(0, inv_freq.numel() * 2, dtype=dtype)

    def at(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin of positions start..start+count-1: [count, 1, head_dim] each."""
        end = start + count
        if end > self.cos.shape[0]:
            positions = torch.arange(max(end, 2 * self.cos.shape[0], 256), dtype=torch.float32)
            angles = torch.outer(positions, self.inv_freq)
            sin = angles.sin() * self.scaling
            self.cos = (torch.cat([angles, angles], dim=-1).cos() * self.scaling).to(self.dtype)
            self.sin = torch.cat([-sin, sin], dim=-1).to(self.dtype)
        return self.cos[start:end, None, :], self.sin[start:end, None, :]

    def rows(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin at each of a batch's positions: [B, head_dim] each."""
        self.at(max(positions), 1)  # extends the table when needed
        index = torch.tensor(positions, dtype=torch.long)
        return self.cos[index], self.sin[index]


# Every small op costs ~10 us inside a decode step (the weights streamed by each matmul
# evict the caches), so the helpers below are written for the fewest ops, not elegance.


class RMSNorm:
    """RMSNorm over the last dimension in fp32, as transformers computes it, in four ops.

    x / sqrt(mean(x^2) + eps) * w == x / hypot(|x|, sqrt(n * eps)) * (w * sqrt(n)).
    torch's rms_norm is a composite of ~8 ops on the CPU.
    """

    def __init__(self, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> None:
        size = weight.shape[-1]
        self.weight = weight.float() * math.sqrt(size)
        self.floor = torch.tensor(math.sqrt(size * eps))
        self.dtype = dtype

    @classmethod
    def prepared(cls, weight: torch.Tensor, floor: torch.Tensor, dtype: torch.dtype) -> RMSNorm:
        """A norm from another norm's weight and floor, as they are (no sqrt(n) again)."""
        norm = cls.__new__(cls)
        norm.weight, norm.floor, norm.dtype = weight, floor, dtype
        return norm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n] -> normalised and scaled, in the activation dtype."""
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
        out = x / torch.hypot(norm, self.floor) * self.weight
        return out if out.dtype == self.dtype else out.to(self.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, head_dim] by position (the rotate-half layout of HF checkpoints);
    sin comes sign-folded from RotaryTable."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


class Embedding:
    """Token embeddings: dense, or int8 rows with a scale each (a quarter of fp32's memory),
    plain or in the compiled kernel's packed layout (shared with a tied output head)."""

    def __init__(self, weight: Weight | PackedWeights, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.scales: torch.Tensor | None = None
        self.packed = weight if isinstance(weight, PackedWeights) else None
        if isinstance(weight, Int8Rows):
            self.table, self.scales = weight
        elif not isinstance(weight, PackedWeights):
            self.table = full_precision(weight).to(dtype).contiguous()

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [T] -> [T, hidden]."""
        if self.packed is not None:
            return self.packed.rows(ids).to(self.dtype)
        rows = self.table[ids]
        if self.scales is None:
            return rows
        return (rows.float() * self.scales[ids, None]).to(self.dtype)
