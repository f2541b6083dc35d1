"""Linear layers for the native decoder: dense, int8 (two kernels) and int4, one interface.

At batch 1 every decode step reads every weight once, so speed is bytes read per token
and how well the kernel streams them. Measured on 2 Zen 5 cores for all Qwen3-0.6B
linears at M=1 (benchmarks/compare_speed.py has the end-to-end view): bf16 F.linear
64 ms, int8 weight-only `_weight_int8pack_mm` 37 ms, int4 `_weight_int4pack_mm_for_cpu`
24 ms, fbgemm dynamic int8 (`quantized.linear_dynamic`, int8 activations too) 23 ms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch.nn import functional

from engine import native_kernels
from engine.native_kernels import pointer

# int8: int8 weights in blocks of 32 (llama.cpp's Q8_0 weights) and int16 activations, on
#   our compiled kernel (engine/kernels/q8_linear.c).
# int8-torch: the same int8 weights on torch's weight-only kernel (`_weight_int8pack_mm`);
#   the fallback where no C compiler is at hand.
# int8-dynamic: fbgemm W8A8 (weights, and activations per token): fastest, least faithful
#   (per-tensor activation scales lose outlier channels: 85 % agreement on SmolLM2).
# int4: 4-bit weights in groups of 32 (`_weight_int4pack_mm_for_cpu`).
Scheme = Literal["none", "int8", "int8-torch", "int8-dynamic", "int4"]
# Groups of 32 like llama.cpp's Q4 blocks: 85.6 % top-1 agreement on SmolLM2 against 71.7 %
# with groups of 64 (benchmarks/fidelity.py), for ~20 % more kernel time.
INT4_GROUP = 32
PREFILL_ROWS = 8  # from this many rows on, int8 layers de-quantise and run one dense matmul


class LinearKernel:
    """y = x @ W.T (+ b) for x [M, K]; subclasses hold W in their own format."""

    in_features: int
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] -> [M, N]."""
        raise NotImplementedError


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


Weight = torch.Tensor | Int8Rows


def int8_rows(weight: Weight) -> Int8Rows:
    """Per-row int8 of weight (no work when it already is)."""
    return weight if isinstance(weight, Int8Rows) else Int8Rows(*per_channel_int8(weight))


def dense(weight: Weight) -> torch.Tensor:
    """A float weight (the dense and int4 kernels cannot start from int8)."""
    if isinstance(weight, Int8Rows):
        raise TypeError("this kernel needs the unquantised weight")
    return weight


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

    Like Int4Linear: the kernel is fast for bf16 inputs only (fp32 takes 7x longer), the
    ops around it are faster in fp32, so fp32 in, bf16 inside, fp32 out. For a prompt
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


class Int4Linear(LinearKernel):
    """Asymmetric group-wise 4-bit weights on torch's packed CPU kernel.

    The kernel is fast only for bf16 inputs (fp32 inputs take a scalar path, 30x slower),
    while the ops between matmuls are faster in fp32: so fp32 in, bf16 inside, fp32 out.
    """

    def __init__(self, weight: Weight, bias: torch.Tensor | None):
        weight = dense(weight)
        n, k = weight.shape
        if k % INT4_GROUP:
            raise ValueError(f"in_features {k} is not a multiple of the int4 group {INT4_GROUP}")
        self.out_features, self.in_features = n, k
        packed, scales_zeros = [], []
        for start in range(0, n, ROW_CHUNK):  # the packing is row-wise, so chunks concatenate
            chunk_packed, chunk_sz = _int4_rows(weight[start : start + ROW_CHUNK])
            packed.append(chunk_packed)
            scales_zeros.append(chunk_sz)
        self.packed = torch.cat(packed)
        self.scales_zeros = torch.cat(scales_zeros, dim=1).to(torch.bfloat16)  # [K/group, N, 2]
        self.bias = None if bias is None else bias.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] fp32 -> [M, N] fp32."""
        out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), self.packed, INT4_GROUP, self.scales_zeros
        ).float()
        return out if self.bias is None else out + self.bias


def _int4_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [n, K] -> (packed codes, fp32 scales and zeros [K / group, n, 2])."""
    n, k = weight.shape
    groups = weight.float().reshape(n, k // INT4_GROUP, INT4_GROUP)
    low = groups.amin(dim=-1, keepdim=True)
    high = groups.amax(dim=-1, keepdim=True)
    scale = ((high - low) / 15.0).clamp(min=1e-8)
    codes = torch.round((groups - low) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
    # The kernel computes (code - 8) * scale + zero, so zero is the value of code 8.
    zero = low + scale * 8.0
    scales_zeros = torch.cat([scale, zero], dim=-1).transpose(0, 1).contiguous()
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1), scales_zeros


class PackedInt8(NamedTuple):
    """int8 weights in blocks of 32 with an fp16 scale each, in the compiled kernel's packed
    layout (see engine/kernels/q8_linear.c)."""

    packed: torch.Tensor  # int8: groups of 4 rows interleaved per 64 bytes
    scales: torch.Tensor  # fp16 block scales, packed alongside
    out_features: int
    in_features: int

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ids [T] de-quantised to fp32 [T, K] (an embedding lookup)."""
        ids = ids.to(torch.int64).contiguous()
        out = torch.empty(ids.shape[0], self.in_features)
        native_kernels.kernels().qb_rows(
            pointer(self.packed),
            pointer(self.scales),
            pointer(ids),
            ids.shape[0],
            self.in_features,
            pointer(out),
        )
        return out


PACKED_GROUP_ROWS = 4  # GROUP_ROWS in q8_linear.c
PACKED_PIECE = 64  # PIECE in q8_linear.c
PACKED_BLOCK = 32  # BLOCK in q8_linear.c: values per scale
# From this many rows on, torch's bf16 GEMM on de-quantised weights beats the kernel (measured
# over Qwen3-0.6B's linears on 2 Zen 5 cores: equal at ~12 rows, 2.5x faster at 100).
PACKED_PREFILL_ROWS = 16


def packed_fits(weight: Weight) -> bool:
    """Whether the compiled kernel's layout takes this weight (a float one, of fitting shape)."""
    if isinstance(weight, Int8Rows):
        return False
    n, k = weight.shape
    return n % PACKED_GROUP_ROWS == 0 and k % PACKED_PIECE == 0


def block_int8(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 in blocks of 32 along K: [n, K] -> (int8 [n, K], fp16 [n, K / 32])."""
    n, k = rows.shape
    blocks = rows.float().reshape(n, k // PACKED_BLOCK, PACKED_BLOCK)
    # The scale is rounded to fp16 first, so the values are quantised against what is stored.
    scales = (blocks.abs().amax(dim=-1) / 127.0).to(torch.float16)
    divisor = scales.float().clamp(min=torch.finfo(torch.float16).tiny)[..., None]
    values = torch.round(blocks / divisor).clamp(-127, 127).to(torch.int8)
    return values.reshape(n, k), scales


def pack_int8(weight: torch.Tensor) -> PackedInt8:
    """Quantise in blocks and pack, a chunk of rows at a time (a large head never sits in
    memory as fp32)."""
    library = native_kernels.kernels()
    n, k = weight.shape
    packed = torch.empty(n * k, dtype=torch.int8)
    scales = torch.empty(n * k // PACKED_BLOCK, dtype=torch.float16)
    for start in range(0, n, ROW_CHUNK):  # ROW_CHUNK is a multiple of the group rows
        values, chunk_scales = block_int8(weight[start : start + ROW_CHUNK])
        library.qb_pack(
            pointer(values),
            pointer(chunk_scales),
            values.shape[0],
            k,
            pointer(packed[start * k :]),
            pointer(scales[start * k // PACKED_BLOCK :]),
        )
    return PackedInt8(packed, scales, n, k)


class PackedInt8Linear(LinearKernel):
    """int8 weights in blocks of 32 (llama.cpp's Q8_0 weights), int16 activations, on our
    compiled AVX-512 VNNI kernel: fp32 in, fp32 out, for prompts too."""

    def __init__(self, weight: Weight | PackedInt8, bias: torch.Tensor | None):
        self.weight = weight if isinstance(weight, PackedInt8) else pack_int8(dense(weight))
        self.out_features, self.in_features = self.weight.out_features, self.weight.in_features
        self.bias = None if bias is None else bias.float()
        self._library = native_kernels.kernels()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] fp32 -> [M, N] fp32."""
        rows = x.shape[0]
        if rows >= PACKED_PREFILL_ROWS:  # a prompt: torch's bf16 GEMM beats this kernel
            dense = functional.linear(x.to(torch.bfloat16), self.bf16_weight()).float()
            return dense if self.bias is None else dense + self.bias
        x = x.float().contiguous()
        out = torch.empty(rows, self.out_features)
        status = self._library.qb_linear(
            pointer(self.weight.packed),
            pointer(self.weight.scales),
            pointer(x),
            pointer(out),
            rows,
            self.out_features,
            self.in_features,
            torch.get_num_threads(),
        )
        if status != 0:
            raise MemoryError("the int8 kernel could not allocate its scratch memory")
        return out if self.bias is None else out + self.bias

    def bf16_weight(self) -> torch.Tensor:
        """The weights de-quantised to bf16 [N, K] (made per prompt, then dropped)."""
        out = torch.empty(self.out_features, self.in_features, dtype=torch.bfloat16)
        self._library.qb_unpack_bf16(
            pointer(self.weight.packed),
            pointer(self.weight.scales),
            self.out_features,
            self.in_features,
            pointer(out),
            torch.get_num_threads(),
        )
        return out


LinearFactory = Callable[[Weight, torch.Tensor | None], LinearKernel]


def linear_factory(scheme: Scheme, dtype: torch.dtype, reduce_range: bool) -> LinearFactory:
    """How to build each linear layer of a model for this scheme."""
    if scheme == "int8-dynamic":
        return lambda weight, bias: DynamicInt8Linear(weight, bias, reduce_range)
    if scheme == "int8":
        # A layer whose shape the packed layout does not take uses torch's kernel (rare).
        return lambda weight, bias: (
            PackedInt8Linear(weight, bias)
            if packed_fits(weight)
            else Int8WeightLinear(weight, bias)
        )
    if scheme == "int8-torch":
        return Int8WeightLinear
    if scheme == "int4":
        # A layer whose width is not a multiple of the group keeps 8 bits (rare in practice).
        return lambda weight, bias: (
            Int4Linear(weight, bias)
            if dense(weight).shape[1] % INT4_GROUP == 0
            else Int8WeightLinear(weight, bias)
        )
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
