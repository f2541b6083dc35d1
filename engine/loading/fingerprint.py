"""A model identity for cache keys: replies from other weights must never be served."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.loading.model_source import ModelSource

_SAMPLE = 1 << 20  # bytes hashed from each end of a weight file
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".json", ".model", ".tiktoken", ".txt"}


def _file_digest(path: Path, digest: hashlib._Hash) -> None:
    # Hashing every byte of a multi-GB checkpoint at each start-up costs seconds; name, size,
    # mtime and both ends change whenever a file is replaced or re-downloaded.
    stat = path.stat()
    digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_SAMPLE))
        if stat.st_size > 2 * _SAMPLE:
            handle.seek(-_SAMPLE, 2)
            digest.update(handle.read(_SAMPLE))


def model_fingerprint(source: ModelSource, commit_hash: str | None) -> str:
    """Hub models: id + resolved commit. Local models: a digest of their files."""
    if not source.is_local:
        commit = commit_hash or source.commit or source.revision or "main"
        return f"hub:{source.location}@{commit}"
    digest = hashlib.sha256()
    folder = Path(source.location)
    if source.gguf_file:
        files = [folder / source.gguf_file]
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    for path in files:
        _file_digest(path, digest)
    return f"local:{digest.hexdigest()}"
