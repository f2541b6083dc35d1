"""The inbox journal: taken once, done when answered, owed across restarts, self-repairing."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from bot.inbox import APOLOGY_WITHIN_S, Inbox, Replay


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_message_is_taken_once_and_owed_until_done_across_restarts(tmp_path: Path) -> None:
    clock = Clock()
    inbox = Inbox(tmp_path / "inbox", 600, clock)
    assert inbox.receive("telegram:1", "telegram:7", {"n": 1})
    assert inbox.receive("telegram:2", "telegram:7", {"n": 2})
    assert inbox.receive("discord:9", "discord:channel:5", {"n": 9})
    assert not inbox.receive("telegram:1", "telegram:7", {"n": 1})  # a redelivery
    inbox.done("telegram:1")
    inbox.close()

    clock.now += 30  # a restart, 30 s later
    again = Inbox(tmp_path / "inbox", 600, clock)
    owed = again.pending("telegram:")
    assert [(e.key, e.payload, e.age_s) for e in owed] == [("telegram:2", {"n": 2}, 30.0)]
    assert [e.key for e in again.pending("discord:")] == ["discord:9"]
    assert not again.receive("telegram:1", "telegram:7", {"n": 1})  # still refused
    again.close()


def test_entries_come_back_oldest_first(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox", 600)
    for n in (5, 3, 9, 1):
        inbox.receive(f"telegram:{n}", "telegram:1", {"n": n})
    assert [e.payload["n"] for e in inbox.pending("telegram:")] == [5, 3, 9, 1]
    inbox.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other schema"])
def test_a_damaged_journal_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "inbox"
    inbox = Inbox(folder, 600)
    for n in range(200):
        inbox.receive(f"telegram:{n}", "telegram:1", {"text": "x" * 200})
    inbox.close()
    database = folder / "inbox.db"
    if damage == "garbage":
        database.write_bytes(b"\x00garbage from a bad disk" * 500)
    elif damage == "truncated":
        size = database.stat().st_size
        with database.open("r+b") as file:
            file.truncate(size // 3)
    else:
        database.unlink()
        for extra in folder.glob("inbox.db-*"):
            extra.unlink()
        with sqlite3.connect(database) as other:
            other.execute("CREATE TABLE inbox (id INTEGER, body BLOB)")

    with caplog.at_level(logging.WARNING):
        fresh = Inbox(folder, 600)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "inbox journal" in warnings[0] and "moved it to" in warnings[0]
    assert list(tmp_path.glob("inbox.damaged-*"))  # kept for a post-mortem
    assert fresh.receive("telegram:1", "telegram:1", {})  # the damaged record is gone
    fresh.close()
    assert Inbox(folder, 600).pending("telegram:")[0].key == "telegram:1"  # and it persists


def test_an_unreadable_entry_is_dropped_not_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(tmp_path / "inbox", 600)
    inbox.receive("telegram:1", "telegram:1", {"n": 1})
    inbox.receive("telegram:2", "telegram:1", {"n": 2})
    inbox.close()
    with sqlite3.connect(tmp_path / "inbox" / "inbox.db") as db:
        db.execute("UPDATE inbox SET payload = '{not json' WHERE key = 'telegram:1'")
    again = Inbox(tmp_path / "inbox", 600)
    assert [e.key for e in again.pending("telegram:")] == ["telegram:2"]
    assert "unreadable" in caplog.text
    assert [e.key for e in again.pending("telegram:")] == ["telegram:2"]  # dropped for good
    again.close()


def test_a_journal_that_cannot_be_written_still_refuses_redeliveries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    inbox = Inbox(blocked, 600)
    assert "unusable, memory only" in caplog.text
    assert inbox.receive("telegram:1", "telegram:1", {})
    assert not inbox.receive("telegram:1", "telegram:1", {})
    assert inbox.pending("telegram:") == []
    inbox.close()


def test_what_becomes_of_an_owed_message_depends_on_its_age(tmp_path: Path) -> None:
    clock = Clock()
    inbox = Inbox(tmp_path / "inbox", 600, clock)
    inbox.receive("telegram:1", "telegram:1", {})
    verdicts = []
    for later in (0, 600, 601, APOLOGY_WITHIN_S, APOLOGY_WITHIN_S + 1):
        clock.now = 1_000_000.0 + later
        verdicts.append(inbox.replay(inbox.pending("telegram:")[0]))
    assert verdicts == [Replay.ANSWER, Replay.ANSWER, Replay.APOLOGISE, Replay.APOLOGISE,
                        Replay.DROP]  # fmt: skip
    inbox.close()
