"""The durable inbox: every message the bot takes is on disk before any work starts, and
marked done only once it was answered (or deliberately left unanswered).

After a crash or a deploy, the entries not done are what the adapters answer on start-up.
The same journal remembers which platform messages were already taken, so one delivered
again (Telegram re-sends what it was not told was received) is answered once, across
restarts too. SQLite in WAL mode with synchronous=FULL: a committed entry survives SIGKILL
and a power cut, and each write is one short append.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from engine import dumps, open_or_repair, require_intact

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KEEP_DONE_S = 3 * 24 * 3600.0  # a done entry is kept this long: Telegram re-sends for 24 h
APOLOGY_WITHIN_S = 24 * 3600.0  # older entries are dropped without an apology

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    key TEXT PRIMARY KEY,      -- platform:message identity, e.g. telegram:<update_id>
    chat TEXT NOT NULL,        -- platform:chat id, for logs and per-chat order
    received_at REAL NOT NULL, -- unix time it was taken
    payload TEXT NOT NULL,     -- JSON: what the adapter needs to answer it again
    sent TEXT NOT NULL DEFAULT '[]', -- JSON: ids of messages posted for its answer so far
    done_at REAL               -- NULL while it still needs an answer
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (done_at);
"""


class Replay(Enum):
    """What becomes of a message owed from before a restart (the same on every platform)."""

    ANSWER = "answer"  # young enough: answered now, as a reply to it
    APOLOGISE = "apologise"  # too old to answer: a short apology, if the bot would have replied
    DROP = "drop"  # older than a day: nobody is waiting any more; logged only


@dataclass(frozen=True)
class InboxEntry:
    """A message taken before the restart and not answered yet."""

    key: str
    chat: str
    received_at: float
    payload: dict[str, Any]
    age_s: float
    sent: tuple[int, ...] = ()  # messages an interrupted answer left behind, to take back


def verdict(entry: InboxEntry, replay_within_s: float) -> Replay:
    """Answer, apologise or drop: by the entry's age (BOT__REPLAY_WITHIN_S, then a day).
    An answer to a question asked long ago lands in a conversation that has moved on; the
    user can ask again in a second."""
    if entry.age_s <= replay_within_s:
        return Replay.ANSWER
    return Replay.APOLOGISE if entry.age_s <= APOLOGY_WITHIN_S else Replay.DROP


class Journal(Protocol):
    """What the adapters need of the inbox: Inbox (SQLite, one process) or bot.state's
    RedisInbox (every process of a fleet)."""

    # How often `pending` is worth asking again while running (a fleet takes over the
    # messages of a process that died); None: only at start-up.
    sweep_s: float | None

    def receive(self, key: str, chat: str, payload: dict[str, Any]) -> bool:
        """Record a message before any work on it; False for a redelivery."""
        ...

    def done(self, key: str) -> None:
        """The message was answered, or deliberately not: never replay it."""
        ...

    def posted(self, key: str, message_id: int) -> None:
        """A message was posted for this entry's answer (taken back if it is interrupted)."""
        ...

    def pending(self, prefix: str) -> list[InboxEntry]:
        """Entries of one platform owed and answered by nobody alive, oldest first; from
        now on this process's to answer."""
        ...

    def replay(self, entry: InboxEntry) -> Replay:
        """Answer, apologise or drop (by the entry's age)."""
        ...

    def close(self) -> None:
        """Release the journal."""
        ...


class Inbox:
    """The journal of incoming messages; one per state directory, used from the event loop.

    A store that cannot be written (a full or read-only disk) does not stop the bot: it
    answers on, remembering in memory what it took, and says so once in the log.
    """

    def __init__(
        self, directory: Path, replay_within_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        # A folder of its own: SQLite's -wal and -shm files beside the database go aside
        # with it when it is damaged (a stale WAL replayed into a fresh file would corrupt it).
        self.directory = directory
        self.path = directory / "inbox.db"
        self.replay_within_s = replay_within_s
        self.sweep_s: float | None = None  # one process: what it owes is known at start-up
        self._clock = clock
        self._memory: set[str] = set()  # keys taken while the disk failed us
        self._degraded = False
        self._db: sqlite3.Connection | None = None
        try:
            self._db = open_or_repair(directory, "inbox journal", self._open)
            self._prune()
        except (sqlite3.Error, OSError) as error:
            log.warning("inbox journal at %s unusable, memory only: %s", directory, error)

    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=2.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            require_intact(db)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}, not {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT key, chat, received_at, payload, sent, done_at FROM inbox LIMIT 1")
        except BaseException:
            db.close()
            raise
        self.path.chmod(0o600)
        return db

    def _prune(self) -> None:
        assert self._db is not None
        self._db.execute(
            "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < ?",
            (self._clock() - KEEP_DONE_S,),
        )

    def _failed(self, action: str, error: sqlite3.Error) -> None:
        if not self._degraded:
            log.warning("inbox journal %s failed, keeping messages in memory: %s", action, error)
        self._degraded = True

    def receive(self, key: str, chat: str, payload: dict[str, Any]) -> bool:
        """Record a message before any work on it; False when it was taken before (a
        redelivery), which must then not be answered again."""
        if key in self._memory:
            return False
        if self._db is not None:
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO inbox (key, chat, received_at, payload) "
                    "VALUES (?, ?, ?, ?)",
                    (key, chat, self._clock(), dumps(payload)),
                )
                return cursor.rowcount == 1  # 0: the key was there already
            except sqlite3.Error as error:
                self._failed("write", error)
        self._memory.add(key)
        return True

    def done(self, key: str) -> None:
        """The message was answered, or deliberately not: never replay it."""
        if self._db is None:
            return
        try:
            # The payload is not needed any more; the key stays, to refuse a redelivery.
            self._db.execute(
                "UPDATE inbox SET done_at = ?, payload = '', sent = '[]' "
                "WHERE key = ? AND done_at IS NULL",
                (self._clock(), key),
            )
        except sqlite3.Error as error:
            self._failed("update", error)

    def posted(self, key: str, message_id: int) -> None:
        """A message was posted for this entry's answer: if the answer is interrupted, the
        next start takes it back before answering again (no half answer is left behind)."""
        if self._db is None:
            return
        try:
            self._db.execute(
                "UPDATE inbox SET sent = json_insert(sent, '$[#]', ?) "
                "WHERE key = ? AND done_at IS NULL",
                (message_id, key),
            )
        except sqlite3.Error as error:
            self._failed("update", error)

    def pending(self, prefix: str) -> list[InboxEntry]:
        """Entries of one platform (`telegram:`) not done, oldest first. An unreadable entry
        is dropped with a warning, not the journal."""
        if self._db is None:
            return []
        try:
            rows = self._db.execute(
                "SELECT key, chat, received_at, payload, sent FROM inbox "
                "WHERE done_at IS NULL AND substr(key, 1, ?) = ? ORDER BY rowid",
                (len(prefix), prefix),
            ).fetchall()
        except sqlite3.Error as error:
            log.warning("inbox journal read failed; nothing replayed: %s", error)
            return []
        now = self._clock()
        entries = []
        for key, chat, received_at, payload, sent in rows:
            try:
                data = json.loads(payload)
                posted = tuple(int(message_id) for message_id in json.loads(sent))
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except (ValueError, TypeError) as error:
                log.warning("inbox entry %s was unreadable (%s); dropped it", key, error)
                self.done(key)
                continue
            age = max(0.0, now - received_at)
            entries.append(InboxEntry(key, chat, received_at, data, age, posted))
        return entries

    def replay(self, entry: InboxEntry) -> Replay:
        """Answer, apologise or drop (by the entry's age: `verdict`)."""
        return verdict(entry, self.replay_within_s)

    def close(self) -> None:
        """Close the journal (every write is already on disk)."""
        if self._db is not None:
            self._db.close()
            self._db = None
