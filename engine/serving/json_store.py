"""diskcache stores that hold only JSON text and never unpickle anything.

diskcache's default Disk pickles keys and values and unpickles them on read, so whoever can
write the cache directory can run code in the bot (CVE-2025-69872). Our stores keep str keys
and JSON text values, refuse to write anything else, and refuse to read pickled rows.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import diskcache
from diskcache.core import MODE_PICKLE

from engine.serving.store_repair import open_or_repair, require_intact


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


# A row that is there but cannot be understood: pickled, not JSON, or not the shape we wrote.
ROW_ERRORS: tuple[type[Exception], ...] = (ValueError, KeyError, TypeError)

T = TypeVar("T")
log = logging.getLogger(__name__)


def read_row(store: diskcache.Cache, key: str, parse: Callable[[Any], T], what: str) -> T | None:
    """parse(the JSON stored under key), or None: on a miss, on a store error (logged), and
    for an unreadable row, which is deleted (logged) so that one bad row costs one entry."""
    try:
        raw = store.get(key)
        return None if raw is None else parse(json.loads(raw))
    except ROW_ERRORS as error:  # before STORE_ERRORS: these are ValueErrors too
        log.warning("an unreadable entry in the %s was dropped: %s", what, error)
        try:
            store.delete(key)
        except STORE_ERRORS as failure:
            log.warning("could not drop it: %s", failure)
        return None
    except STORE_ERRORS as error:
        log.warning("%s read failed, treated as a miss: %s", what, error)
        return None


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


def open_json_store(directory: Path, size_limit_bytes: int, what: str) -> diskcache.Cache:
    """Open (or create) a least-recently-used store of JSON text in a 0700 directory; a
    damaged one (`what` names it in the log) is moved aside and a fresh one started."""

    def open_checked() -> diskcache.Cache:
        private_directory(directory)
        store = diskcache.Cache(
            str(directory),
            disk=JsonOnlyDisk,
            size_limit=size_limit_bytes,
            eviction_policy="least-recently-used",
            # Bounded waits on a locked database: a busy store is bypassed, not waited on.
            timeout=2,
        )
        try:
            _check(store)
        except BaseException:
            store.close()
            raise
        return store

    return open_or_repair(directory, what, open_checked)


def _check(store: diskcache.Cache) -> None:
    """Read the store once the way it will be read: a truncated page or a table of another
    schema fails here, at start-up, not on a user's first message."""
    require_intact(store._con)  # diskcache's own connection (no public accessor)
    store.get("\x00probe")  # the Cache table's columns, as diskcache queries them


def dumps(value: Any) -> str:
    """Canonical JSON text (sorted keys, no ASCII escaping: Vietnamese stays readable)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
