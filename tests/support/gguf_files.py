"""Write small GGUF files for tests with the `gguf` package, as llama.cpp's converter does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as Kind
from gguf import GGUFWriter, quants

from engine.loading.gguf_tensors import gguf_name

K_QUANT_BYTES = {Kind.Q4_K: 144, Kind.Q5_K: 176, Kind.Q6_K: 210}
SUPER_BLOCK = 256


def random_k_quant(kind: Kind, rows: int, k: int, seed: int = 0) -> np.ndarray:
    """Random but sane K-quant blocks [rows, row bytes]: random codes and sub-block scales,
    small positive fp16 super-block scales (random bytes there could be inf or NaN)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows * k // SUPER_BLOCK, K_QUANT_BYTES[kind]), dtype=np.uint8)
    scales = rng.uniform(0.0005, 0.004, size=(raw.shape[0], 2)).astype(np.float16).view(np.uint8)
    if kind == Kind.Q6_K:
        raw[:, -2:] = scales[:, 0:2]  # d comes last
    else:
        raw[:, 0:4] = scales  # d, dmin come first
    return raw.reshape(rows, -1)


def llama_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives a Llama model's q and k (LlamaModel.permute)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


Chooser = Callable[[str, np.ndarray], Kind]


def write_gguf(
    path: Path,
    tensors: dict[str, torch.Tensor],
    architecture: str,
    kind_of: Chooser,
    *,
    heads: int = 0,
    kv_heads: int = 0,
    raw_blocks: dict[str, tuple[Kind, np.ndarray]] | None = None,
) -> dict[str, torch.Tensor]:
    """Write tensors (transformers' names) to a GGUF file, matrices in kind_of's type (or,
    for names in raw_blocks, those blocks as they are); q and k permuted for "llama".
    Returns what the file holds, de-quantised, in transformers' names and row order."""
    writer = GGUFWriter(path, architecture)
    held: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        data = tensor.float().numpy()
        if name in (raw_blocks or {}):
            kind, stored = (raw_blocks or {})[name]
        else:
            kind = kind_of(name, data) if data.ndim == 2 else Kind.F32
            stored = data if kind == Kind.F32 else quants.quantize(data, kind)
        values = np.asarray(quants.dequantize(stored, kind), dtype=np.float32)
        held[name] = torch.from_numpy(values.reshape(data.shape).copy())
        if architecture == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            stored = llama_permute(stored, heads if "q_proj" in name else kv_heads)
        writer.add_tensor(gguf_name(name), stored, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held
