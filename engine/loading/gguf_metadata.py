"""A GGUF file's metadata read fast, for transformers' conversion of its tokenizer and config.

transformers (5.x) converts a GGUF file's tokenizer and config through the `gguf` package's
GGUFReader, which builds a numpy view of every element of every metadata array: 17 million
views, ~20 s for Qwen3's 151k-token vocabulary and merges, twice (tokenizer, then config).
transformers reads only .fields (each field's .parts, .data and .types) and the tensors'
names of it, so while it converts, this reader stands in for GGUFReader: the same values,
read with one pass over the header. Should a later transformers read more of the reader,
the conversion is simply run again with the package's own (see kept_tokenizers.py).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import gguf
import numpy as np

from engine.loading.gguf_index import ARRAY, SCALARS, STRING, Cursor, GGUFFormatError

_NUMPY = {"B": np.uint8, "b": np.int8, "H": np.uint16, "h": np.int16, "I": np.uint32,
          "i": np.int32, "f": np.float32, "?": np.bool_, "Q": np.uint64, "q": np.int64,
          "d": np.float64}  # fmt: skip


@dataclass
class MetadataField:
    """What transformers reads of gguf.ReaderField: a value's parts, which of them are the
    data (all of them here), and its types ([type] or [9, element type])."""

    name: str
    types: list[int]
    parts: list[object]
    data: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = list(range(len(self.parts)))


@dataclass(frozen=True)
class TensorName:
    """What transformers reads of gguf.ReaderTensor when it asks for no tensor data."""

    name: str


class MetadataReader:
    """A stand-in for gguf.GGUFReader(path) that holds the metadata and tensor names only."""

    def __init__(self, path: str | os.PathLike[str], mode: str = "r") -> None:
        del mode  # read-only, as transformers opens it
        with (
            open(path, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            cursor = Cursor(data)
            if data[:4] != b"GGUF":
                raise GGUFFormatError(f"{path} does not start with the GGUF magic")
            cursor.at = 8  # magic, version
            tensor_count, field_count = cursor.count(), cursor.count()
            self.fields: dict[str, MetadataField] = {}
            for _ in range(field_count):
                name = cursor.string()
                self.fields[name] = _field(name, cursor, data)
            self.tensors: list[TensorName] = []
            for _ in range(tensor_count):
                name = cursor.string()
                dimensions = cursor.count("I")
                cursor.at += 8 * dimensions + 4 + 8  # the dimensions, type and offset
                self.tensors.append(TensorName(name))


def _field(name: str, cursor: Cursor, data: mmap.mmap) -> MetadataField:
    """One metadata value, its parts shaped as transformers' _gguf_parse_value takes them:
    a string as its bytes, a number as a one-element tuple."""
    kind = cursor.count("I")
    if kind == STRING:
        return MetadataField(name, [STRING], [_bytes(cursor)])
    if kind in SCALARS:
        return MetadataField(name, [kind], [(cursor.read(SCALARS[kind]),)])
    if kind != ARRAY:
        raise GGUFFormatError(f"unknown metadata value type {kind} of {name}")
    element, count = cursor.count("I"), cursor.count()
    if element == STRING:
        return MetadataField(name, [ARRAY, STRING], [_bytes(cursor) for _ in range(count)])
    if element not in SCALARS:
        raise GGUFFormatError(f"metadata {name}: arrays of type {element} are not read here")
    values: np.ndarray = np.frombuffer(
        data, dtype=_NUMPY[SCALARS[element]], count=count, offset=cursor.at
    )
    cursor.at += count * struct.calcsize(SCALARS[element])
    return MetadataField(name, [ARRAY, element], [(value,) for value in values.tolist()])


def _bytes(cursor: Cursor) -> bytes:
    length = cursor.count()
    value = bytes(cursor.data[cursor.at : cursor.at + length])
    cursor.at += length
    return value


@contextmanager
def fast_metadata_reader() -> Iterator[None]:
    """While inside, gguf.GGUFReader (as transformers imports it, at each call) is ours."""
    original = gguf.GGUFReader
    gguf.GGUFReader = MetadataReader  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]
