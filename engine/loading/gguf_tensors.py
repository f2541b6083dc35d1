"""A GGUF file's tensors by their transformers names, for the native decoder's builder.

Each matrix is read from the file a chunk of rows at a time (plain reads, no mapping, so the
file's pages never count in the process's memory) and handed over in its own blocks when
they map onto ours (gguf_blocks.py), else de-quantised. llama.cpp's converter reorders the
rows of q and k for Llama-architecture models (its rotary pairs are adjacent, transformers'
are half a head apart); the order is undone here by reading rows in the original order.
"""

from __future__ import annotations

import re
from pathlib import Path

import huggingface_hub
import numpy as np
import torch
from gguf import GGMLQuantizationType as Kind
from gguf import LlamaFileType

from engine.errors import ModelLoadFailed
from engine.loading.gguf_blocks import (
    EXACT_KINDS,
    FLOAT_KINDS,
    dequantisable,
    exact_blocks,
    floats,
    packed_bits,
)
from engine.loading.gguf_index import GGUFIndex, TensorEntry, read_index
from engine.loading.model_source import ModelSource
from engine.native.packed_linear import BlockQuantized

_LAYER_PARTS = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")
# Architectures whose q and k rows llama.cpp's converter permutes (LlamaModel.permute).
_PERMUTED_ARCHITECTURES = frozenset({"llama", "mistral"})


def gguf_name(name: str) -> str:
    """transformers' name of a tensor -> its name in a GGUF file."""
    if name in _TOP:
        return _TOP[name]
    match = _LAYER_NAME.fullmatch(name)
    if match is None or match.group(2) not in _LAYER_PARTS:
        return name
    return f"blk.{match.group(1)}.{_LAYER_PARTS[match.group(2)]}.{match.group(3)}"


def gguf_path(source: ModelSource) -> Path:
    """The GGUF file on disk (a hub model's downloaded into the Hugging Face cache)."""
    if source.gguf_file is None:
        raise ValueError(f"{source.location} is not a GGUF model")
    if source.is_local:
        return Path(source.location) / source.gguf_file
    try:
        return Path(
            huggingface_hub.hf_hub_download(
                source.location,
                source.gguf_file,
                revision=source.revision,
                local_files_only=source.cached,
            )
        )
    except OSError as error:  # hub HTTP and cache errors derive from OSError
        message = f"cannot download {source.gguf_file} from {source.location}: {error}"
        raise ModelLoadFailed(message.splitlines()[0]) from error


def file_type_name(index: GGUFIndex) -> str:
    """The file's quantisation as llama.cpp names it (Q4_K_M, Q8_0, ...), or "" if unknown."""
    value = index.metadata.get("general.file_type")
    if not isinstance(value, int):
        return ""
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return ""


class GGUFMatrix(BlockQuantized):
    """One 2-D tensor of the file, read by rows."""

    def __init__(self, path: Path, entry: TensorEntry, order: np.ndarray | None) -> None:
        self.path, self.entry, self.order = path, entry, order
        rows, k = entry.shape
        self.shape = (rows, k)
        self.bits = packed_bits(entry.kind)
        self._row_bytes = entry.size // rows

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of the file's bytes [rows, row bytes], in transformers' order."""
        if self.order is not None:  # q and k of a Llama model: small, read whole
            return np.ascontiguousarray(self._read(0, self.shape[0])[self.order[start:stop]])
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> np.ndarray:
        buffer = np.empty((stop - start) * self._row_bytes, dtype=np.uint8)
        with self.path.open("rb") as handle:
            handle.seek(self.entry.offset + start * self._row_bytes)
            if handle.readinto(buffer.data) != buffer.nbytes:
                raise ModelLoadFailed(f"{self.path.name} ends inside tensor {self.entry.name}")
        return buffer.reshape(stop - start, self._row_bytes)

    def floats(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop de-quantised to fp32."""
        return floats(self._raw(start, stop), self.entry.kind, self.shape[1])

    def blocks(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The file's own codes and scales where the type maps onto ours, else converted."""
        if self.entry.kind in EXACT_KINDS:
            return exact_blocks(self._raw(start, stop), self.entry.kind, self.shape[1])
        return super().blocks(start, stop)


class GGUFWeights:
    """fetch(name) for the native decoder's builder: float tensors as torch tensors, quantised
    matrices as GGUFMatrix (keep_blocks) or de-quantised to fp32 (an explicit scheme)."""

    def __init__(self, path: Path, architecture: str, heads: int, kv_heads: int, *,
                 keep_blocks: bool) -> None:  # fmt: skip
        self.path = path
        self.index = read_index(path)
        self.keep_blocks = keep_blocks
        self._heads = {"attn_q": heads, "attn_k": kv_heads}
        self._permuted = architecture in _PERMUTED_ARCHITECTURES
        unknown = sorted(
            {e.kind.name for e in self.index.tensors.values() if not dequantisable(e.kind)}
        )
        if unknown:
            raise ModelLoadFailed(
                f"{path.name} holds tensors in {', '.join(unknown)}, which qwenbot cannot read; "
                "use a Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0 or F16 file of the model instead"
            )

    def __call__(self, name: str) -> torch.Tensor | BlockQuantized | None:
        """The tensor stored under transformers' name, or None when the file has none."""
        entry = self.index.tensors.get(gguf_name(name))
        if entry is None:
            return None
        order = self._row_order(entry)
        if entry.kind in FLOAT_KINDS:
            values = _float_tensor(self.path, entry)
            return values if order is None else values[torch.from_numpy(order)]
        if len(entry.shape) != 2:
            shape = list(entry.shape)
            raise ModelLoadFailed(
                f"{self.path.name}: tensor {entry.name} is a {entry.kind.name} of shape {shape}; "
                "only matrices are quantised"
            )
        matrix = GGUFMatrix(self.path, entry, order)
        return matrix if self.keep_blocks else matrix.floats(0, entry.shape[0])

    def _row_order(self, entry: TensorEntry) -> np.ndarray | None:
        """For a Llama model's q and k (weights and biases): transformers' row r is the
        file's row order[r] (the inverse of the converter's permutation)."""
        part = entry.name.split(".")[2] if entry.name.startswith("blk.") else ""
        if not self._permuted or part not in self._heads:
            return None
        rows, heads = entry.shape[0], self._heads[part]
        half = rows // heads // 2
        return np.arange(rows).reshape(heads, half, 2).transpose(0, 2, 1).reshape(rows)


_TORCH_FLOATS = {Kind.F32: torch.float32, Kind.F16: torch.float16, Kind.BF16: torch.bfloat16}


def _float_tensor(path: Path, entry: TensorEntry) -> torch.Tensor:
    """An F32, F16 or BF16 tensor as it is stored (no widening: a large F16 table stays F16)."""
    buffer = bytearray(entry.size)
    with path.open("rb") as handle:
        handle.seek(entry.offset)
        if handle.readinto(buffer) != entry.size:
            raise ModelLoadFailed(f"{path.name} ends inside tensor {entry.name}")
    return torch.frombuffer(buffer, dtype=_TORCH_FLOATS[entry.kind]).reshape(entry.shape)
