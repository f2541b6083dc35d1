"""History trimming and storage, the rate limiter, command parsing and footers."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

from bot.access import RateLimiter
from bot.commands import parse_command
from bot.formatting import footer
from bot.history import HistoryStore, trim_to_budget
from bot.i18n import translator
from engine.engine import Engine
from engine.events import ChatTurn, ReplyStats
from tests.support.exploit import TouchOnUnpickle

SYSTEM = ChatTurn("system", "Be brief.")


def _conversation(pairs: int) -> list[ChatTurn]:
    turns = []
    for i in range(pairs):
        turns += [ChatTurn("user", f"Question {i}: " + "tell me more " * 10)]
        turns += [ChatTurn("assistant", f"Answer {i}: " + "here is more " * 10)]
    return turns


async def test_trimming_counts_real_tokens_and_drops_oldest_pairs(engine: Engine) -> None:
    history = _conversation(6)
    new = ChatTurn("user", "And now?")
    full = engine.count_tokens([SYSTEM, *history, new])
    budget = full - 40  # forces at least one pair out
    kept = trim_to_budget(SYSTEM, history, new, engine.count_tokens, budget)
    assert engine.count_tokens([SYSTEM, *kept, new]) <= budget // 2  # down to half...
    assert kept == history[len(history) - len(kept) :]  # a suffix: oldest went first
    assert kept[0].role == "user" and len(kept) % 2 == 0
    one_pair_more = history[len(history) - len(kept) - 2 :]
    assert engine.count_tokens([SYSTEM, *one_pair_more, new]) > budget // 2  # ...no further
    assert trim_to_budget(SYSTEM, history, new, engine.count_tokens, full) == history


async def test_a_growing_chat_keeps_its_history_prefix_between_trims(engine: Engine) -> None:
    """The prompt's beginning changes only on the turns that trim, and those are few: the
    engine's kept state is reusable on every other turn."""
    history: list[ChatTurn] = []
    trims = []
    for turn in range(24):
        new = ChatTurn("user", f"Question {turn}: " + "tell me more " * 10)
        kept = trim_to_budget(SYSTEM, history, new, engine.count_tokens, 400)
        trims.append(kept != history)
        history = [*kept, new, ChatTurn("assistant", f"Answer {turn}: " + "here is more " * 10)]
    assert 2 <= sum(trims) <= 6  # about every fourth turn at this budget, not every turn
    assert not any(trims[turn] and trims[turn + 1] for turn in range(23))


def test_trimming_keeps_the_new_message_even_over_budget() -> None:
    kept = trim_to_budget(SYSTEM, _conversation(2), ChatTurn("user", "x"), lambda t: 10**6, 10)
    assert kept == []


def test_history_persists_and_clears(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h", 1 << 20)
    turns = [ChatTurn("user", "Chào bạn"), ChatTurn("assistant", "Xin chào!")]
    store.save("tg:1:", turns)
    store.close()
    reopened = HistoryStore(tmp_path / "h", 1 << 20)
    assert reopened.load("tg:1:") == turns
    reopened.clear("tg:1:")
    assert reopened.load("tg:1:") == []
    reopened.close()


def test_history_refuses_a_planted_pickle(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h", 1 << 20)
    store.save("chat", [ChatTurn("user", "hi")])
    marker = tmp_path / "ran"
    payload = pickle.dumps(TouchOnUnpickle(marker))
    with sqlite3.connect(tmp_path / "h" / "cache.db") as db:
        db.execute("UPDATE Cache SET mode = 4, value = ? WHERE key = 'chat'", (payload,))
    assert store.load("chat") == []
    assert not marker.exists()
    store.close()


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    assert limiter.acquire("u") == 0.0
    assert limiter.acquire("u") == 0.0
    wait = limiter.acquire("u")
    assert 9.9 < wait <= 10.0  # one message every 10 s
    assert limiter.acquire("other") == 0.0
    now[0] = 10.0
    assert limiter.acquire("u") == 0.0


def test_one_notice_per_cooldown_window() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=1, clock=lambda: now[0])
    assert limiter.acquire("u") == 0.0
    wait = limiter.acquire("u")
    assert limiter.first_refusal("u", wait)  # told once...
    now[0] = 5.0
    assert not limiter.first_refusal("u", limiter.acquire("u"))  # ...not again in the window
    assert limiter.first_refusal("other", 10.0)  # another user is told on their own
    now[0] = 10.5  # the window is over: a token is back
    assert limiter.acquire("u") == 0.0
    now[0] = 11.0
    assert limiter.first_refusal("u", limiter.acquire("u"))  # a new flood, a new notice


def test_a_garbage_history_store_is_moved_aside_and_remembers_again(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h", 1 << 20)
    store.save("chat", [ChatTurn("user", "hi"), ChatTurn("assistant", "hello")])
    store.close()
    (tmp_path / "h" / "cache.db").write_bytes(b"not a database, a disk fault" * 300)
    repaired = HistoryStore(tmp_path / "h", 1 << 20)
    assert repaired.load("chat") == []  # the damaged store's history is lost...
    repaired.save("chat", [ChatTurn("user", "again"), ChatTurn("assistant", "yes")])
    repaired.close()
    reopened = HistoryStore(tmp_path / "h", 1 << 20)
    assert [t.content for t in reopened.load("chat")] == ["again", "yes"]  # ...not the future
    reopened.close()
    assert len(list(tmp_path.glob("h.damaged-*"))) == 1


def test_an_unreadable_conversation_is_dropped_not_the_store(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h", 1 << 20)
    store.save("bad", [ChatTurn("user", "hi")])
    store.save("good", [ChatTurn("user", "still here")])
    with sqlite3.connect(tmp_path / "h" / "cache.db") as db:
        db.execute("UPDATE Cache SET value = '[{\"role\": 7}]' WHERE key = 'bad'")
    assert store.load("bad") == []
    assert [t.content for t in store.load("good")] == ["still here"]
    with sqlite3.connect(tmp_path / "h" / "cache.db") as db:
        assert db.execute("SELECT count(*) FROM Cache WHERE key = 'bad'").fetchone() == (0,)
    store.close()


def test_command_parsing() -> None:
    assert parse_command("/help") is not None
    cmd = parse_command("/stats@qwen_bot now please")
    assert cmd is not None and (cmd.name, cmd.target, cmd.args) == (
        "stats",
        "qwen_bot",
        "now please",
    )
    assert parse_command("/RESET\nplease").name == "reset"  # type: ignore[union-attr]
    assert parse_command("hello /help") is None
    assert parse_command("/ not a command") is None
    assert parse_command("/usr/bin/python is where?") is None


def test_footer_shapes() -> None:
    fresh = ReplyStats(30, 96, 0.213, 38.44, 2.7, 0.0, False)
    assert footer(translator("en"), fresh) == "⚡ 0.21 s to first token · 38.4 tok/s · 96 tokens"
    cached = ReplyStats(30, 96, 0.003, 0.0, 0.003, 0.0, True)
    assert footer(translator("en"), cached) == "⚡ cached · 3 ms"
    queued = ReplyStats(30, 10, 0.2, 30.0, 5.0, 2.0, False)
    assert footer(translator("en"), queued).endswith("queued 2.0 s")
