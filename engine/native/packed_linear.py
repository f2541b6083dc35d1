"""Linear layers on our compiled block-quantised kernels (kernels/packed_linear.c).

Weights are 8 or 4 bits in blocks of 32 with fp16 scales (llama.cpp's Q8_0 and Q4_1
formats), packed in tiles of 16 rows so the kernel streams them and a decode batch shares
each tile's registers; activations enter as fp32 and become 15-bit integers inside the
kernel. Measured on 2 Zen 5 cores over all Qwen3-0.6B linears at one token: 8 bits 19-21 ms
and 4 bits 13-16 ms, against 40 ms for torch's int8 weight-only kernel.
"""

from __future__ import annotations

import functools
import sys
from abc import ABC, abstractmethod
from typing import Literal, NamedTuple

import torch
from torch.nn import functional

from engine.config import PromptMatmul
from engine.native import kernel_builder
from engine.native.kernel_builder import pointer

Bits = Literal[8, 4]

# Changing the packed layout (these, or packed_layout.h) must bump LAYOUT_VERSION in
# engine/loading/packed_cache.py: weights kept on disk in the old layout are then not read.
TILE = 16  # TILE in packed_linear.c: rows interleaved together
BLOCK = 32  # BLOCK in packed_linear.c: weights per scale
CHUNK_ROWS = 8192  # rows quantised at a time (a multiple of TILE)
# From this many rows on, torch's bf16 GEMM on de-quantised weights beats the kernel (measured
# over Qwen3-0.6B's linears on 2 Zen 5 cores: equal at ~12 rows, 2.5x faster at 100).
PREFILL_ROWS = 16
# Where the CPU has AMX, torch's bf16 GEMM runs on its bf16 tiles and overtakes the integer
# prompt kernel from this many rows on with 16-bit activations (Qwen3-0.6B's linears on a
# 2-core Xeon, per layer: 16 rows 1.5 ms / 3.9 bf16, 64 rows 5.3 / 5.5, 128 rows 10.0 / 7.6;
# 8-bit 6.2 at 128). Without AMX, 16 bits are 1.5-2.3x faster than bf16 at every size
# there and 8 bits 2.4-3.5x (benchmarks/prompt_speed.py).
AMX_INT_ROWS = 64
ActivationBits = Literal[0, 8, 16]  # 0: bf16 through torch


class PromptPlan(NamedTuple):
    """How a prompt pass reads the packed weights: integer activations of `bits` for passes
    of fewer than `below_rows` rows, torch's bf16 GEMM for the others."""

    bits: ActivationBits
    below_rows: int

    def bits_for(self, rows: int) -> ActivationBits:
        """The activation width for a pass of this many rows (0: bf16)."""
        return self.bits if rows < self.below_rows else 0

    def name(self) -> str:
        """For the start-up line and /stats: "int16", "int8 below 64 rows, else bf16", ..."""
        if self.bits == 0 or self.below_rows == 0:
            return "bf16"
        if self.below_rows == sys.maxsize:
            return f"int{self.bits}"
        return f"int{self.bits} below {self.below_rows} rows, else bf16"


def prompt_plan(choice: PromptMatmul) -> PromptPlan:
    """ENGINE__PROMPT_MATMUL on this CPU. auto: 16-bit integer activations for every pass
    where the kernel has AVX-512 VNNI and the CPU no AMX; with AMX, for short passes only;
    bf16 where the kernel is plain C (torch's bf16 is faster there)."""
    if choice == "bf16":
        return PromptPlan(0, 0)
    if choice in {"int8", "int16"}:
        return PromptPlan(8 if choice == "int8" else 16, sys.maxsize)
    library = kernel_builder.kernels()
    if not library.qb_vnni():
        return PromptPlan(0, 0)
    return PromptPlan(16, AMX_INT_ROWS if _prompt_path() == 2 else sys.maxsize)


@functools.cache
def _prompt_path() -> int:
    """The prompt kernel's path here (2 AMX, 1 VNNI, 0 plain C): fixed for the process."""
    return int(kernel_builder.kernels().qb_prompt_path())


class PackedWeights(NamedTuple):
    """A weight matrix in the kernel's packed layout."""

    packed: torch.Tensor  # uint8: tiles of 16 rows interleaved, 4 weights at a time
    scales: torch.Tensor  # fp16 block scales (and 4-bit minimums), packed alike
    bits: Bits
    out_features: int
    in_features: int

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ids [T] de-quantised to fp32 [T, K] (an embedding lookup)."""
        ids = ids.to(torch.int64).contiguous()
        out = torch.empty(ids.shape[0], self.in_features)
        kernel_builder.kernels().qb_rows(
            pointer(self.packed), pointer(self.scales), self.bits,
            pointer(ids), ids.shape[0], self.in_features, pointer(out),
        )  # fmt: skip
        return out


class BlockQuantized(ABC):
    """A weight [N, K] already quantised in blocks of 32 along K (a GGUF file's tensor),
    read a chunk of rows at a time so that no full-precision copy of it is ever made."""

    shape: tuple[int, int]
    bits: Bits  # the packed width that keeps its precision

    @abstractmethod
    def floats(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop de-quantised to fp32 [rows, K]."""

    def blocks(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows start..stop as block_quantise gives them in self.bits (codes, scales); a
        format that maps onto ours exactly returns its own codes here."""
        return block_quantise(self.floats(start, stop), self.bits)


def dequantise(codes: torch.Tensor, scales: torch.Tensor, bits: Bits) -> torch.Tensor:
    """block_quantise's output back to fp32 [n, K]."""
    n, k = codes.shape
    blocks = codes.float().reshape(n, k // BLOCK, BLOCK)
    if bits == 8:
        return (blocks * scales.float()[..., None]).reshape(n, k)
    d, m = scales.float().unbind(-1)
    return (blocks * d[..., None] + m[..., None]).reshape(n, k)


def packed_fits(shape: tuple[int, ...]) -> bool:
    """Whether the packed layout takes a weight of this [N, K] shape."""
    n, k = shape
    return n % TILE == 0 and k % BLOCK == 0


def block_quantise(rows: torch.Tensor, bits: Bits) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of 32 along K: [n, K] -> (int8 codes [n, K], fp16 scales).

    8 bits, symmetric (Q8_0): w = d * code, code in [-127, 127]; scales [n, K/32].
    4 bits, asymmetric (Q4_1): w = d * code + m, code in [0, 15]; scales [n, K/32, 2] as
    (d, m). Q4_0's symmetric rule scored 72 % top-1 agreement on SmolLM2 against 85 % here.
    """
    n, k = rows.shape
    blocks = rows.float().reshape(n, k // BLOCK, BLOCK)
    # Scales are rounded to fp16 first, so the codes are chosen against what is stored.
    if bits == 8:
        d = (blocks.abs().amax(dim=-1) / 127.0).to(torch.float16)
        stored, shifted, lowest, highest = d, blocks, -127, 127
    else:
        m = blocks.amin(dim=-1).to(torch.float16)
        d = ((blocks.amax(dim=-1) - m.float()) / 15.0).to(torch.float16)
        stored, shifted, lowest, highest = (
            torch.stack([d, m], dim=-1),
            blocks - m.float()[..., None],
            0,
            15,
        )
    divisor = torch.where(d == 0, torch.ones_like(d), d).float()[..., None]
    codes = torch.round(shifted / divisor).clamp(lowest, highest)
    return codes.to(torch.int8).reshape(n, k), stored


def pack(weight: torch.Tensor | BlockQuantized, bits: Bits) -> PackedWeights:
    """Quantise in blocks and pack, a chunk of rows at a time (a large head never sits in
    memory as fp32); blocks already in this width are packed as they are."""
    library = kernel_builder.kernels()
    n, k = weight.shape
    packed = torch.empty(n * k * bits // 8, dtype=torch.uint8)
    words = 2 if bits == 4 else 1  # d, and m for 4 bits
    scales = torch.empty(n * k // BLOCK * words, dtype=torch.float16)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        if not isinstance(weight, BlockQuantized):
            values, chunk_scales = block_quantise(weight[start:stop], bits)
        elif weight.bits == bits:
            values, chunk_scales = weight.blocks(start, stop)
        else:
            values, chunk_scales = block_quantise(weight.floats(start, stop), bits)
        values, chunk_scales = values.contiguous(), chunk_scales.contiguous()
        library.qb_pack(
            pointer(values), pointer(chunk_scales), values.shape[0], k, bits,
            pointer(packed[start * k * bits // 8 :]), pointer(scales[start * k // BLOCK * words :]),
        )  # fmt: skip
    return PackedWeights(packed, scales, bits, n, k)


class PackedLinear:
    """A linear layer on the packed kernel: fp32 in, fp32 out, for prompts too."""

    def __init__(
        self,
        weight: torch.Tensor | BlockQuantized | PackedWeights,
        bias: torch.Tensor | None,
        bits: Bits,
    ) -> None:
        self.weight = weight if isinstance(weight, PackedWeights) else pack(weight, bits)
        self.out_features, self.in_features = self.weight.out_features, self.weight.in_features
        self.bias = None if bias is None else bias.float()
        self._library = kernel_builder.kernels()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] fp32 -> [M, N] fp32."""
        if x.shape[0] >= PREFILL_ROWS:  # torch's bf16 GEMM beats this kernel
            return self.dense(x)
        return self.rows_kernel(x)

    def dense(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x [M, K] -> [M, N] in dtype by torch's bf16 GEMM on the de-quantised weights
        (prompts; bf16 out spares a conversion when the next matmul reads it in bf16)."""
        dense = functional.linear(x.to(torch.bfloat16), self.bf16_weight())
        if self.bias is not None:
            dense = dense.float() + self.bias
        return dense.to(dtype)

    def prompt(self, x: torch.Tensor, dtype: torch.dtype, bits: ActivationBits) -> torch.Tensor:
        """A prompt pass's x [M, K] (fp32 or bf16) -> [M, N] in dtype: on integer activations
        of 8 or 16 bits (each row's result independent of the others), or by dense() for 0."""
        if bits == 0:
            return self.dense(x, dtype)
        if x.dtype not in {torch.float32, torch.bfloat16}:
            x = x.float()
        x = x.contiguous()
        rows, w = x.shape[0], self.weight
        wide = self.bias is not None or dtype not in {torch.float32, torch.bfloat16}
        out = torch.empty(rows, w.out_features, dtype=torch.float32 if wide else dtype)
        status = self._library.qb_prompt_linear(
            pointer(w.packed), pointer(w.scales), w.bits, pointer(x), x.dtype == torch.bfloat16,
            pointer(out), out.dtype == torch.bfloat16, rows, w.out_features, w.in_features,
            bits == 16, torch.get_num_threads(), _prompt_path(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("the prompt kernel could not allocate its scratch memory")
        if self.bias is not None:
            out = out + self.bias
        return out.to(dtype)

    def rows_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] -> [M, N] on the kernel whatever M: each row computed alone (a decode
        batch's rows must not depend on each other)."""
        rows = x.shape[0]
        x = x.float().contiguous()
        out = torch.empty(rows, self.out_features)
        w = self.weight
        status = self._library.qb_linear(
            pointer(w.packed), pointer(w.scales), w.bits, pointer(x), pointer(out),
            rows, w.out_features, w.in_features, torch.get_num_threads(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("the packed kernel could not allocate its scratch memory")
        return out if self.bias is None else out + self.bias

    def bf16_weight(self) -> torch.Tensor:
        """The weights de-quantised to bf16 [N, K] (made per prompt, then dropped)."""
        w = self.weight
        out = torch.empty(w.out_features, w.in_features, dtype=torch.bfloat16)
        self._library.qb_unpack_bf16(
            pointer(w.packed), pointer(w.scales), w.bits, w.out_features, w.in_features,
            pointer(out), torch.get_num_threads(),
        )  # fmt: skip
        return out
