"""diskcache stores that hold only JSON text and never unpickle anything.

diskcache's default Disk pickles keys and values and unpickles them on read, so whoever can
write the cache directory can run code in the bot (CVE-2025-69872). Our stores keep str keys
and JSON text values, refuse to write anything else, and refuse to read pickled rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE


class PickleRefused(ValueError):
    """A row in the store was pickled: written by someone else, and never loaded."""


# Everything a damaged, locked or full store can raise; each means "treat as a miss".
STORE_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.Error,
    OSError,
    PickleRefused,
    TypeError,
    ValueError,
    KeyError,
    diskcache.Timeout,
)


class JsonOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk for str keys and str values only."""

    def put(self, key: Any) -> tuple[Any, bool]:
        """Store keys raw; a non-str key would be pickled, so refuse it."""
        if type(key) is not str:
            raise TypeError(f"JSON store keys must be str, not {type(key).__name__}")
        return super().put(key)  # type: ignore[no-any-return]

    def get(self, key: Any, raw: bool) -> Any:
        """Read a key back; a pickled key is refused."""
        if not raw:
            raise PickleRefused("pickled key in JSON store")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        """Store text only; anything else would be pickled, so refuse it."""
        if type(value) is not str or read:
            raise TypeError(f"JSON store values must be str, not {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Read a value back; a pickled value is refused without being loaded."""
        if mode == MODE_PICKLE:
            raise PickleRefused("pickled value in JSON store")
        return super().fetch(mode, filename, value, read)


def private_directory(path: Path) -> Path:
    """Create path (and parents) if needed and make it readable by this user only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def open_json_store(directory: Path, size_limit_bytes: int) -> diskcache.Cache:
    """Open (or create) a least-recently-used store of JSON text in a 0700 directory."""
    private_directory(directory)
    return diskcache.Cache(
        str(directory),
        disk=JsonOnlyDisk,
        size_limit=size_limit_bytes,
        eviction_policy="least-recently-used",
        # Bounded waits on a locked database: a busy store is bypassed, not waited on.
        timeout=2,
    )


def dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, no ASCII escaping: Vietnamese stays readable)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
