"""Damaged stores are moved aside, never loaded and never left in the way.

A store that cannot be opened or read (not a database, truncated, the wrong schema) would
otherwise be bypassed on every start, forever: the bot would forget every conversation
until someone deleted the file by hand. Moving it aside keeps the damaged bytes for a
post-mortem and lets a fresh store start at once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def aside_name(path: Path, when: float | None = None) -> Path:
    """Where a damaged store goes: beside it, named `<name>.damaged-<UTC time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
    candidate = path.with_name(f"{path.name}.damaged-{stamp}")
    number = 1
    while candidate.exists():  # two repairs in one second keep both
        number += 1
        candidate = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
    return candidate


def move_aside(path: Path, what: str, reason: object) -> Path | None:
    """Rename a damaged store (file or folder) out of the way, with one WARNING saying what
    was moved and why; None when there was nothing there."""
    if not path.exists() and not path.is_symlink():
        return None
    target = aside_name(path)
    path.rename(target)
    log.warning("%s at %s was damaged (%s); moved it to %s and started afresh",
                what, path, reason, target.name)  # fmt: skip
    return target


# What SQLite says about a file that is not (any more) the database we wrote: garbage, a
# truncated page, or tables of another schema. Locked, full, read-only or unopenable files
# are not damaged: moving them aside would lose a healthy store to a passing problem.
_DAMAGE_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_ERROR", "SQLITE_MISMATCH"})


def is_damage(error: BaseException) -> bool:
    """True when `error` says the store's contents are damaged, not that it is busy."""
    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", None)
        if name is not None:
            return name in _DAMAGE_CODES
        return type(error) is sqlite3.DatabaseError  # an old sqlite3 without error names
    # Rows the store's own code cannot parse (diskcache's settings, our JSON).
    return isinstance(error, ValueError | KeyError | TypeError)


def require_intact(connection: sqlite3.Connection) -> None:
    """Raise (as damage) unless SQLite's quick check finds the database whole: a truncated
    page fails here, at start-up, not on a user's first message."""
    problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(f"integrity check: {'; '.join(problems[:3])}")


def open_or_repair(path: Path, what: str, opener: Callable[[], T]) -> T:
    """opener(), or, when it fails because the store is damaged, the same after moving `path`
    aside. Any other failure (a locked or unwritable store) is the caller's to handle."""
    try:
        return opener()
    except Exception as error:
        if not is_damage(error):
            raise
        move_aside(path, what, error)
    return opener()
