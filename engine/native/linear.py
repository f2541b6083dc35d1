"""Linear layers for the native decoder: dense, torch's int8 kernels, and the choice per scheme.

At batch 1 every decode step reads every weight once, so speed is bytes read per token
and how well the kernel streams them. Measured on 2 Zen 5 cores for all Qwen3-0.6B
linears at M=1 (benchmarks/compare_speed.py has the end-to-end view): bf16 F.linear
64 ms, int8 weight-only `_weight_int8pack_mm` 37-40 ms, fbgemm dynamic int8
(`quantized.linear_dynamic`, int8 activations too) 23 ms, our packed kernels 22 ms in 8
bits and 16 ms in 4 (engine/native/packed_linear.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

import torch
from torch.nn import functional

from engine.native.block_weights import full_precision
from engine.native.packed_linear import Bits, BlockQuantized, PackedLinear, packed_fits

# int8: int8 weights in blocks of 32 (llama.cpp's Q8_0 weights) and 15-bit activations, on
#   our compiled kernel (engine/native/packed_linear.py).
# int8-torch: the same int8 weights on torch's weight-only kernel (`_weight_int8pack_mm`);
#   the fallback where no C compiler is at hand.
# int8-dynamic: fbgemm W8A8 (weights, and activations per token): fastest, least faithful
#   (per-tensor activation scales lose outlier channels: 85 % agreement on SmolLM2).
# int4: 4-bit weights in blocks of 32 (llama.cpp's Q4_1) on the same compiled kernel.
Scheme = Literal["none", "int8", "int8-torch", "int8-dynamic", "int4"]
PREFILL_ROWS = 8  # from this many rows on, int8-torch de-quantises for one dense matmul


class LinearKernel(Protocol):
    """y = x @ W.T (+ b) for x [M, K]; each kernel holds W in its own format."""

    in_features: int
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] -> [M, N]."""
        ...


class DenseLinear(LinearKernel):
    """Plain weights in the activation dtype."""

    def __init__(self, weight: Weight, bias: torch.Tensor | None, dtype: torch.dtype):
        self.out_features, self.in_features = dense(weight).shape
        self.weight = dense(weight).to(dtype).contiguous()
        self.bias = None if bias is None else bias.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] -> [M, N]."""
        return functional.linear(x, self.weight, self.bias)


ROW_CHUNK = 8192  # rows quantised at a time: a 150k-row head never sits in memory as fp32


class Int8Rows(NamedTuple):
    """Weights already quantised per row: a tied embedding and output head share them."""

    quantized: torch.Tensor  # int8 [N, K]
    scales: torch.Tensor  # fp32 [N]


Weight = torch.Tensor | Int8Rows | BlockQuantized


def int8_rows(weight: Weight) -> Int8Rows:
    """Per-row int8 of weight (no work when it already is)."""
    if isinstance(weight, Int8Rows):
        return weight
    return Int8Rows(*per_channel_int8(full_precision(weight)))


def dense(weight: Weight) -> torch.Tensor:
    """A float weight (the dense kernel cannot start from int8 rows)."""
    if isinstance(weight, Int8Rows):
        raise TypeError("this kernel needs the unquantised weight")
    return full_precision(weight)


def per_channel_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight [N, K] -> (int8 [N, K], fp32 scales [N])."""
    quantized = torch.empty(weight.shape, dtype=torch.int8)
    scales = torch.empty(weight.shape[0], dtype=torch.float32)
    for start in range(0, weight.shape[0], ROW_CHUNK):
        rows = weight[start : start + ROW_CHUNK].float()
        scale = rows.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        quantized[start : start + ROW_CHUNK] = torch.round(rows / scale[:, None]).clamp(-127, 127)
        scales[start : start + ROW_CHUNK] = scale
    return quantized, scales


class DynamicInt8Linear(LinearKernel):
    """fbgemm's dynamic int8 linear: int8 weights, activations quantised per call, fp32 out.

    It is the fastest CPU GEMV torch ships (integer dot products, VNNI where present), and
    the fastest prefill too. torch marks the quantized-tensor API deprecated; it is still in
    the torch versions pyproject allows, and the loader falls back to int8 without it.
    """

    def __init__(self, weight: Weight, bias: torch.Tensor | None, reduce_range: bool):
        quantized, scales = int8_rows(weight)
        self.out_features, self.in_features = quantized.shape
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            # The deprecation notice for quantized tensors; see the class docstring.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(
                quantized, scales.double(), zero_points, 0
            )
            self.packed = torch.ops.quantized.linear_prepack(
                qweight, None if bias is None else bias.float()
            )
        # Without VNNI, fbgemm's 16-bit intermediate sums can saturate: use 7-bit activations.
        self.reduce_range = reduce_range

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] fp32 -> [M, N] fp32."""
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)
        return out


class Int8WeightLinear(LinearKernel):
    """int8 weights, per-channel scales; the kernel de-quantises as it multiplies.

    The kernel is fast for bf16 inputs only (fp32 takes 7x longer), the ops around it are
    faster in fp32, so fp32 in, bf16 inside, fp32 out. For a prompt
    (many rows) the packed kernel is slow, and de-quantising the layer to bf16 for one
    dense matmul takes half the time.
    """

    def __init__(self, weight: Weight, bias: torch.Tensor | None):
        self.weight, scales = int8_rows(weight)
        self.out_features, self.in_features = self.weight.shape
        self.scales = scales.to(torch.bfloat16)
        self.bias = None if bias is None else bias.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] fp32 -> [M, N] fp32."""
        if x.shape[0] >= PREFILL_ROWS:
            # int8 values are exact in bf16; the scales apply to the output, in fp32.
            dense = functional.linear(x.to(torch.bfloat16), self.weight.to(torch.bfloat16))
            out = dense.float() * self.scales.float()
        else:
            out = torch.ops.aten._weight_int8pack_mm(
                x.to(torch.bfloat16), self.weight, self.scales
            ).float()
        return out if self.bias is None else out + self.bias


LinearFactory = Callable[[Weight, torch.Tensor | None], LinearKernel]


def linear_factory(scheme: Scheme, dtype: torch.dtype, reduce_range: bool) -> LinearFactory:
    """How to build each linear layer of a model for this scheme."""
    if scheme == "int8-dynamic":
        return lambda weight, bias: DynamicInt8Linear(weight, bias, reduce_range)
    if scheme in {"int8", "int4"}:
        bits: Bits = 8 if scheme == "int8" else 4

        def packed_or_torch(weight: Weight, bias: torch.Tensor | None) -> LinearKernel:
            # A shape the packed layout does not take uses torch's int8 kernel (rare).
            if isinstance(weight, Int8Rows) or not packed_fits(weight.shape):
                return Int8WeightLinear(weight, bias)
            # Blocks from a GGUF file keep their own width (4 or 8 bits) whatever the scheme.
            return PackedLinear(
                weight, bias, weight.bits if isinstance(weight, BlockQuantized) else bits
            )

        return packed_or_torch
    if scheme == "int8-torch":
        return Int8WeightLinear
    return lambda weight, bias: DenseLinear(weight, bias, dtype)


def activation_dtype(scheme: Scheme, dtype: torch.dtype) -> torch.dtype:
    """The dtype between matmuls: fp32 for the quantised kernels (small ops are faster in
    fp32 on a CPU, and fbgemm's kernel takes fp32), else the model dtype."""
    return dtype if scheme == "none" else torch.float32


def kernel_problem(scheme: Scheme, dtype: torch.dtype, reduce_range: bool) -> str | None:
    """Run the scheme's kernel once on a small layer; why it cannot run here, or None."""
    weight = torch.randn(32, 128)
    try:
        layer = linear_factory(scheme, dtype, reduce_range)(weight, None)
        layer(torch.ones(1, 128, dtype=activation_dtype(scheme, dtype)))
    except (RuntimeError, NotImplementedError, AttributeError, ValueError, OSError) as error:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"
    return None
