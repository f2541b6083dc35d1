"""The native decoder's packed weights kept on disk, so a start after the first maps them.

Quantising a bf16 checkpoint (or repacking a GGUF file's blocks) costs seconds at every
start; the result depends only on the model's files, the scheme and our kernel's layout.
So the first start writes every tensor of the built decoder to one file, and later starts
map that file (torch.from_file: pages are read on first use, and count once, as the
weights do). The file is derived data: written beside its place and renamed in, checked
for its size and header when read, deleted and rebuilt (with a warning) when damaged; the
folder is kept under ENGINE__PACKED_CACHE_MB by dropping the least recently used files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.loading.decoder_state import decoder_from_state, decoder_state
from engine.native.model import NativeDecoder

log = logging.getLogger(__name__)

MAGIC = b"QWENBOTW"
# Bump when the packed layout, the state's names or what a scheme builds changes: files
# written for another version are never read (their name differs).
LAYOUT_VERSION = 1
_ALIGN = 64
_DTYPES = {
    str(d): d for d in (torch.uint8, torch.int8, torch.float16, torch.bfloat16, torch.float32)
}


class DamagedCache(ValueError):
    """A cache file that cannot be what was written (cut short, or not ours)."""


def cache_folder() -> Path:
    """Where packed weights are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwenbot" / "packed"


def cache_path(fingerprint: str, variant: str) -> Path:
    """The file for one model (its fingerprint) built one way (scheme, dtype, ...)."""
    key = hashlib.sha256(f"{LAYOUT_VERSION}\0{fingerprint}\0{variant}".encode()).hexdigest()
    return cache_folder() / f"{key[:32]}.qbw"


def load_cached(path: Path, hf_config: Any) -> NativeDecoder | None:
    """The decoder from its cache file, or None when there is none or it was damaged."""
    if not path.is_file():
        return None
    try:
        meta, tensors = _read(path)
        decoder = decoder_from_state(hf_config, meta, tensors)
    except (DamagedCache, KeyError, ValueError, TypeError, RuntimeError, OSError) as error:
        log.warning("packed weights in %s were damaged (%s); building them again", path, error)
        path.unlink(missing_ok=True)
        return None
    os.utime(path)  # most recently used: the last to be dropped
    return decoder


def save_cached(path: Path, decoder: NativeDecoder, limit_mb: int) -> None:
    """Write the decoder's packed weights (when its kind can be kept), then trim the folder;
    a full or read-only disk only costs the next start its speed."""
    state = decoder_state(decoder)
    if state is None:
        return
    meta, tensors = state
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > limit_mb * 2**20:
        log.info("packed weights (%d MB) exceed ENGINE__PACKED_CACHE_MB; not kept", size >> 20)
        return
    try:
        _trim(path.parent, limit_mb * 2**20 - size)
        _write(path, meta, tensors)
    except (OSError, RuntimeError, ValueError) as error:  # a disk error, or a tensor torch
        # cannot write as bytes: the next start builds the weights again, nothing worse
        log.warning("could not keep the packed weights in %s: %s", path.parent, error)


def _write(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Header (magic, length, JSON index), then each tensor's bytes, 64-byte aligned."""
    index: dict[str, list[Any]] = {}
    offsets: dict[str, int] = {}
    offset = 0
    for name, tensor in tensors.items():
        offset = offsets[name] = -(-offset // _ALIGN) * _ALIGN
        nbytes = tensor.numel() * tensor.element_size()
        index[name] = [str(tensor.dtype), list(tensor.shape), offset, nbytes]
        offset += nbytes
    header = json.dumps({"meta": meta, "tensors": index, "data_bytes": offset}).encode()
    start = -(-(len(MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(dir=path.parent, prefix=".writing-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(MAGIC + struct.pack("<Q", len(header)) + header)
            for name, tensor in tensors.items():
                handle.seek(start + offsets[name])
                handle.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
            handle.truncate(start + offset)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    finally:
        Path(scratch).unlink(missing_ok=True)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and every tensor as a view into the mapped file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(len(MAGIC) + 8)
        if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
            raise DamagedCache("not a packed-weights file")
        (length,) = struct.unpack("<Q", head[len(MAGIC) :])
        if length > size:
            raise DamagedCache("header longer than the file")
        header = json.loads(handle.read(length))
    start = -(-(len(MAGIC) + 8 + length) // _ALIGN) * _ALIGN
    if start + int(header["data_bytes"]) != size:
        raise DamagedCache(f"{size} bytes where {start + header['data_bytes']} were written")
    mapped = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    tensors = {}
    for name, (dtype, shape, offset, nbytes) in header["tensors"].items():
        raw = mapped[start + offset : start + offset + nbytes]
        tensors[name] = raw.view(_DTYPES[dtype]).reshape(shape)
    return header["meta"], tensors


def _trim(folder: Path, room: int) -> None:
    """Delete the least recently used files until the rest fit in `room` bytes."""
    if not folder.is_dir():
        return
    files = sorted(folder.glob("*.qbw"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    for old in files:
        if total <= room:
            break
        total -= old.stat().st_size
        old.unlink(missing_ok=True)
        log.info("dropped packed weights %s (least recently used)", old.name)
