"""A checkpoint's tensors, one at a time by name, for the native decoder's builder.

From safetensors we read one tensor at a time with plain file reads (no mmap), so the
process never holds the bf16 checkpoint and its quantised copy at once. A GGUF file is read
the same way, its quantised blocks kept (gguf_tensors.py). Other formats (.bin) come
through a transformers model whose tensors are handed over and dropped one by one.
"""

from __future__ import annotations

import ctypes
import json
import logging
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub
import torch

from engine.errors import ModelLoadFailed
from engine.loading.gguf_tensors import GGUFWeights, gguf_path
from engine.loading.model_source import ModelSource
from engine.native.packed_linear import BlockQuantized

log = logging.getLogger(__name__)

# checkpoint name -> tensor (still in blocks, from a GGUF file), or None
TensorFetch = Callable[[str], torch.Tensor | BlockQuantized | None]

_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def checkpoint_fetch(
    source: ModelSource, config: Any, dtype: torch.dtype, *, keep_blocks: bool
) -> TensorFetch:
    """Stream tensors from a GGUF file (its blocks kept when keep_blocks) or safetensors
    when the checkpoint has them, else via transformers."""
    if source.gguf_file:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return GGUFWeights(gguf_path(source), config.model_type, heads, kv_heads,
                           keep_blocks=keep_blocks)  # fmt: skip
    folder = _checkpoint_folder(source)
    files = safetensors_files(folder) if folder is not None else []
    if files:
        return SafetensorsReader(files)
    # Imported here: transformers' model code costs ~1 s that safetensors and GGUF skip.
    from engine.loading.transformers_backend import load_weights  # noqa: PLC0415

    model = load_weights(source, torch.device("cpu"), dtype)
    return state_dict_fetch(model)


def _checkpoint_folder(source: ModelSource) -> Path | None:
    """A local folder with the safetensors checkpoint, downloading a hub model if needed."""
    if source.is_local:
        return Path(source.location)
    try:
        folder = huggingface_hub.snapshot_download(
            source.location,
            revision=source.revision,
            allow_patterns=["*.json", "*.safetensors"],
            local_files_only=source.cached,
        )
    except OSError as error:  # hub HTTP and cache errors derive from OSError
        message = f"cannot download the weights of {source.location}: {error}"
        raise ModelLoadFailed(message.splitlines()[0]) from error
    return Path(folder)


class SafetensorsReader:
    """Reads named tensors from .safetensors files without mapping them into memory."""

    def __init__(self, files: list[Path]) -> None:
        self._where: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for path in files:
            with path.open("rb") as handle:
                (header_size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_size))
            for name, entry in header.items():
                if name != "__metadata__":
                    self._where[name] = (path, 8 + header_size, entry)

    def __call__(self, name: str) -> torch.Tensor | None:
        """The tensor stored under name, or None when the checkpoint has none."""
        if name not in self._where:
            return None
        path, data_start, entry = self._where[name]
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        buffer = bytearray(end - begin)
        with path.open("rb") as handle:
            handle.seek(data_start + begin)
            handle.readinto(buffer)
        return torch.frombuffer(buffer, dtype=dtype).reshape(entry["shape"])


def state_dict_fetch(model: torch.nn.Module) -> TensorFetch:
    """Hand a loaded transformers model's tensors over one by one, freeing each after use."""
    tensors: dict[str, torch.Tensor] = dict(model.state_dict())
    model.to("meta")  # the model's own references go; ours are the last ones

    def fetch(name: str) -> torch.Tensor | None:
        return tensors.pop(name, None)

    return fetch


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's .safetensors files (sharded via the index, or the single file)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def release_free_memory() -> None:
    """Hand the checkpoint's freed buffers back to the OS (glibc keeps them otherwise).

    Without this the process keeps ~0.7 GB of freed bf16 tensors resident after loading.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim with
        log.debug("malloc_trim unavailable")
