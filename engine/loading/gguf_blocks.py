"""GGUF block formats turned into our packed kernel's blocks, without a float copy.

Our blocks are 32 weights with fp16 scales: 8 bits as w = d * code (llama.cpp's Q8_0) and
4 bits as w = d * code + m (Q4_1). So Q8_0, Q4_0 (m = -8 d) and Q4_1 map exactly, and Q4_K
(super-blocks of 256 with 6-bit scales and minimums for each 32) maps with each 32's d and
m rounded to fp16 (a relative 2^-11 of a step). Every other format the `gguf` package can
de-quantise is converted block by block into the closest width that does not lose more:
8 bits for Q5_* and Q6_K, 4 bits for the 2- and 3-bit and IQ formats.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType as Kind
from gguf import quants

from engine.native.packed_linear import BLOCK, Bits

FLOAT_KINDS = frozenset({Kind.F32, Kind.F16, Kind.BF16})
EXACT_KINDS: dict[Kind, Bits] = {Kind.Q8_0: 8, Kind.Q4_0: 4, Kind.Q4_1: 4, Kind.Q4_K: 4}
_WIDER_KINDS = frozenset({Kind.Q5_0, Kind.Q5_1, Kind.Q5_K, Kind.Q6_K})


def packed_bits(kind: Kind) -> Bits:
    """The width a tensor of this GGUF type is held in."""
    if kind in EXACT_KINDS:
        return EXACT_KINDS[kind]
    return 8 if kind in _WIDER_KINDS else 4


def dequantisable(kind: Kind) -> bool:
    """Whether the `gguf` package can de-quantise this type (else we cannot load it)."""
    return kind in FLOAT_KINDS or kind in quants._type_traits


def floats(raw: np.ndarray, kind: Kind, k: int) -> torch.Tensor:
    """Rows of raw bytes [rows, row bytes] of any supported type -> fp32 [rows, k]."""
    if kind == Kind.BF16:
        values = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.asarray(quants.dequantize(raw, kind), dtype=np.float32)
    return torch.from_numpy(values.reshape(raw.shape[0], k))


def exact_blocks(raw: np.ndarray, kind: Kind, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a Q8_0/Q4_0/Q4_1/Q4_K tensor -> (codes int8 [rows, k], fp16 scales
    [rows, k/32] for 8 bits or [rows, k/32, 2] as (d, m) for 4), block_quantise's layout."""
    rows = raw.shape[0]
    if kind == Kind.Q4_K:
        return _q4_k(raw, k)
    size = {Kind.Q8_0: 34, Kind.Q4_0: 18, Kind.Q4_1: 20}[kind]
    blocks = raw.reshape(rows, k // BLOCK, size)
    d = _halves(blocks[..., 0:2])
    if kind == Kind.Q8_0:
        codes = np.ascontiguousarray(blocks[..., 2:]).view(np.int8)
        return _tensor(codes, rows, k), torch.from_numpy(d)
    if kind == Kind.Q4_0:
        m, nibbles = (-8.0 * d.astype(np.float32)).astype(np.float16), blocks[..., 2:]
    else:
        m, nibbles = _halves(blocks[..., 2:4]), blocks[..., 4:]
    # A block's 16 bytes hold weights 0-15 in their low nibbles and 16-31 in their high ones.
    codes = np.concatenate([nibbles & 15, nibbles >> 4], axis=-1).view(np.int8)
    return _tensor(codes, rows, k), torch.from_numpy(np.stack([d, m], axis=-1))


def _q4_k(raw: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K: 144-byte super-blocks of 256 (d, dmin, 12 bytes of 6-bit scales and minimums,
    128 bytes of nibbles); weight = d * scale * code - dmin * min for each 32."""
    rows = raw.shape[0]
    blocks = raw.reshape(-1, 144)
    d, dmin = _halves(blocks[:, 0:2]).astype(np.float32), _halves(blocks[:, 2:4]).astype(np.float32)
    scale, minimum = quants.Q4_K.get_scale_min(blocks[:, 4:16])
    block_d = (d[:, None] * scale.astype(np.float32)).astype(np.float16)  # [super, 8]
    block_m = (-dmin[:, None] * minimum.astype(np.float32)).astype(np.float16)
    # 4 runs of 32 bytes: a run's low nibbles are one block of 32, its high ones the next.
    nibbles = blocks[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    codes = (nibbles & 15).view(np.int8)
    scales = np.stack([block_d, block_m], axis=-1).reshape(rows, k // BLOCK, 2)
    return _tensor(codes, rows, k), torch.from_numpy(scales)


def _halves(pairs: np.ndarray) -> np.ndarray:
    """Byte pairs [..., 2] -> fp16 [...] (a copy, so it does not pin the raw rows)."""
    return np.ascontiguousarray(pairs).view(np.float16)[..., 0]


def _tensor(codes: np.ndarray, rows: int, k: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(codes).reshape(rows, k))
