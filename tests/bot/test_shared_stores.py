"""Every store behaves the same embedded (SQLite/diskcache files) and in a real Redis: the
same test functions run against both. Two BotStates on one Redis stand for two processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from bot.i18n import translator
from bot.inbox import InboxEntry, Journal, Replay
from bot.settings import BotSettings, Settings, StateSettings
from bot.state.open_state import BotState, open_state
from bot.stats_report import shared_state_line
from engine import CachedReply, ChatTurn, EngineSettings, ReplyCache
from tests.support.redis_server import RedisServer

OpenState = Callable[[], BotState]


@pytest.fixture(params=["embedded", "redis"])
def open_states(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenState]:
    """Opens states on one backing store: each call is one more process (or a restart)."""
    state = StateSettings()
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        state = StateSettings(redis_url=server.url, owner_ttl_s=1.0, lock_lease_s=1.0)
    bot = BotSettings(history_dir=tmp_path / "history", inbox_dir=tmp_path / "inbox")
    engine = EngineSettings(cache_dir=tmp_path / "responses")
    settings = Settings(bot=bot, state=state, engine=engine)
    opened: list[BotState] = []

    def opener() -> BotState:
        opened.append(open_state(settings))
        return opened[-1]

    yield opener
    for each in opened:
        each.close()


def taken_over(journal: Journal, prefix: str) -> list[InboxEntry]:
    """What a (re)started process answers: a fleet's sweep claims an entry of a process
    that is gone once it has seen it gone twice."""
    return journal.pending(prefix) or journal.pending(prefix)


def test_history_is_kept_replaced_and_forgotten(open_states: OpenState) -> None:
    first = open_states()
    turns = [ChatTurn("user", "Xin chào, bạn khỏe không?"), ChatTurn("assistant", "Khỏe ạ.")]
    first.history.save("telegram:1", turns)
    assert first.history.load("telegram:1") == turns
    assert first.history.load("telegram:2") == []
    first.close()

    second = open_states()  # a restart, or another process
    assert second.history.load("telegram:1") == turns
    second.history.clear("telegram:1")
    assert second.history.load("telegram:1") == []


def test_replies_are_cached_for_the_next_start_and_every_process(open_states: OpenState) -> None:
    reply = CachedReply("Paris.", 12, 3, 1_700_000_000.0, "length")
    with closing(_reply_cache(open_states())) as cache:
        cache.put("k" * 64, reply)
        assert cache.get("k" * 64) == reply
        assert cache.get("m" * 64) is None
    with closing(_reply_cache(open_states())) as cache:  # a restart, or another process
        assert cache.get("k" * 64) == reply


def _reply_cache(state: BotState) -> ReplyCache:
    """The state's shared cache, or the engine's own disk cache it opens when given none."""
    if state.reply_cache is not None:
        return state.reply_cache
    from engine.serving.response_cache import ResponseCache

    return ResponseCache(state.settings.engine.cache_dir, 1 << 20)


def test_a_users_burst_then_one_notice_per_cooldown(open_states: OpenState) -> None:
    limiter = open_states().limiter(per_minute=6, burst=2, scope="chat")
    assert limiter.acquire("telegram:7") == 0.0
    assert limiter.acquire("telegram:7") == 0.0
    wait = limiter.acquire("telegram:7")
    assert 9.0 < wait <= 10.0  # one token per 10 s
    assert limiter.acquire("telegram:8") == 0.0  # another user has a bucket of their own
    assert limiter.first_refusal("telegram:7", wait)
    assert not limiter.first_refusal("telegram:7", wait)


def test_a_message_is_taken_once_and_owed_until_done(open_states: OpenState) -> None:
    first = open_states()
    inbox = first.journal()
    assert inbox.receive("telegram:1:10", "telegram:5", {"text": "một"})
    assert inbox.receive("telegram:1:11", "telegram:5", {"text": "hai"})
    assert inbox.receive("discord:2:12", "discord:channel:9", {"text": "ba"})
    assert not inbox.receive("telegram:1:10", "telegram:5", {"text": "một"})  # redelivered
    inbox.posted("telegram:1:11", 1234567890123456789)  # a Discord-sized id, exactly
    inbox.done("telegram:1:10")
    first.close()  # a deploy: 11 and 12 still owed

    again = open_states().journal()
    owed = taken_over(again, "telegram:1:")
    assert [(e.key, e.chat, e.payload, e.sent) for e in owed] == [
        ("telegram:1:11", "telegram:5", {"text": "hai"}, (1234567890123456789,))
    ]
    assert again.replay(owed[0]) is Replay.ANSWER
    assert [e.key for e in taken_over(again, "discord:2:")] == ["discord:2:12"]
    assert not again.receive("telegram:1:10", "telegram:5", {})  # still refused
    again.done("telegram:1:11")
    assert taken_over(again, "telegram:1:") == []


async def test_one_conversation_at_a_time(open_states: OpenState) -> None:
    one = open_states()
    other = open_states() if one.shared else one  # embedded stores serve one process
    inside: list[str] = []
    overlaps = []

    async def turn(locks_of: BotState, name: str) -> None:
        async with locks_of.locks.hold("telegram:42"):
            overlaps.append(len(inside))
            inside.append(name)
            await asyncio.sleep(0.05)
            inside.remove(name)

    await asyncio.gather(*(turn(state, f"{n}") for n, state in enumerate([one, other] * 3)))
    assert overlaps == [0] * 6


# Redis only: what several processes and an outage add.


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., BotState]]:
    """BotStates on one real Redis, each one process of a fleet."""
    opened: list[BotState] = []

    def member(**state: object) -> BotState:
        settings = Settings(
            bot=BotSettings(history_dir=tmp_path / "h", inbox_dir=tmp_path / "i"),
            state=StateSettings(redis_url=redis_server.url, **state),  # type: ignore[arg-type]
        )
        opened.append(open_state(settings))
        return opened[-1]

    yield member
    for each in opened:
        each.close()


def test_a_users_limit_holds_across_processes(fleet: Callable[..., BotState]) -> None:
    one = fleet().limiter(per_minute=6, burst=2, scope="chat")
    other = fleet().limiter(per_minute=6, burst=2, scope="chat")
    assert one.acquire("telegram:7") == 0.0
    assert other.acquire("telegram:7") == 0.0
    assert one.acquire("telegram:7") > 0 and other.acquire("telegram:7") > 0
    assert one.first_refusal("telegram:7", 10) and not other.first_refusal("telegram:7", 10)
    http = fleet().limiter(per_minute=6, burst=2, scope="http")
    assert http.acquire("telegram:7") == 0.0  # another kind of limit, another bucket


def test_a_live_processes_messages_are_not_taken_a_dead_ones_are_taken_once(
    fleet: Callable[..., BotState],
) -> None:
    busy = fleet(owner_ttl_s=1.0).journal()
    busy.receive("telegram:1:20", "telegram:5", {"n": 20})
    helpers = [fleet(owner_ttl_s=1.0).journal() for _ in range(3)]
    for _ in range(3):  # the owner is alive: nobody takes its answer in progress
        assert all(helper.pending("telegram:1:") == [] for helper in helpers)
        time.sleep(0.4)
    busy._heartbeat.stop()  # type: ignore[attr-defined]  # SIGKILL: no heartbeat, no goodbye
    time.sleep(1.2)  # the owner's key runs out
    taken = [[e.key for e in taken_over(helper, "telegram:1:")] for helper in helpers]
    assert sorted(taken) == [[], [], ["telegram:1:20"]]  # exactly one process answers it


async def test_a_chats_messages_take_their_turns_in_arrival_order_across_processes(
    fleet: Callable[..., BotState],
) -> None:
    one, other = fleet().locks, fleet().locks
    answered: list[int] = []
    release = asyncio.Event()

    async def first() -> None:
        async with one.hold("telegram:42"):
            await release.wait()

    async def message(number: int) -> None:
        async with (one if number % 2 else other).hold("telegram:42"):
            answered.append(number)
            await asyncio.sleep(0.01)

    holder = asyncio.create_task(first())
    await asyncio.sleep(0.1)
    gave_up = asyncio.create_task(message(99))  # first in the queue, then cancelled
    await asyncio.sleep(0.1)
    waiting = []
    for number in range(1, 7):  # alternately on the two processes, 30 ms apart
        waiting.append(asyncio.create_task(message(number)))
        await asyncio.sleep(0.03)
    gave_up.cancel()
    release.set()
    # The one that gave up left the queue: the rest do not wait out its 15 s lease.
    await asyncio.wait_for(asyncio.gather(holder, *waiting), 10)
    assert answered == [1, 2, 3, 4, 5, 6]


async def test_a_chat_lock_of_a_process_that_died_frees_itself(
    fleet: Callable[..., BotState], redis_server: RedisServer
) -> None:
    locks = fleet(lock_lease_s=1.0).locks
    client = redis_server.client()
    client.set("qwenbot:lock:telegram:42", "a process that died", px=1000)
    client.close()
    started = time.monotonic()
    async with locks.hold("telegram:42"):
        waited = time.monotonic() - started
    assert 0.5 < waited < 5


async def test_redis_down_the_bot_answers_without_shared_state_then_recovers(
    fleet: Callable[..., BotState], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    state = fleet()
    assert state.reply_cache is not None
    turns = [ChatTurn("user", "hi"), ChatTurn("assistant", "hello")]
    state.history.save("telegram:1", turns)
    state.reply_cache.put("r" * 64, CachedReply("hello", 3, 1, 1.0))
    inbox = state.journal()

    redis_server.stop()
    assert state.history.load("telegram:1") == []  # no history, no exception
    state.history.save("telegram:1", [*turns, *turns])  # dropped
    assert state.reply_cache.get("r" * 64) is None
    assert state.limiter(6, 1, "chat").acquire("telegram:9") == 0.0  # this process's own
    assert inbox.receive("telegram:1:30", "telegram:1", {})  # answered, remembered here
    assert not inbox.receive("telegram:1:30", "telegram:1", {})
    async with state.locks.hold("telegram:1"):
        pass
    down = state.status()
    assert down is not None and not down.up
    line = shared_state_line(translator("en"), down)
    assert "DOWN" in line and "without shared history or reply cache" in line
    assert sum("not answering" in r.getMessage() for r in caplog.records) == 1  # once

    redis_server.start()
    deadline = time.monotonic() + 15  # the heartbeat notices within seconds, unasked
    while not state.status().up and time.monotonic() < deadline:  # type: ignore[union-attr]  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    back = state.status()
    assert back is not None and back.up and back.where == redis_server.url
    up = f"Shared state: Redis at {redis_server.url} · up"
    assert shared_state_line(translator("en"), back) == up
    assert state.history.load("telegram:1") == turns  # what it held before the outage
    assert state.reply_cache.get("r" * 64) == CachedReply("hello", 3, 1, 1.0)
    assert "is back" in caplog.text


def test_values_in_redis_are_json_text_with_a_ttl(
    fleet: Callable[..., BotState], redis_server: RedisServer
) -> None:
    state = fleet(history_ttl_days=1.0)
    state.history.save("telegram:1", [ChatTurn("user", "Hà Nội")])
    client = redis_server.client()
    try:
        raw = client.get("qwenbot:history:telegram:1")
        assert json.loads(raw) == [{"content": "Hà Nội", "role": "user"}]
        assert 86_000 < client.ttl("qwenbot:history:telegram:1") <= 86_400
    finally:
        client.close()


def test_unreadable_values_in_redis_are_dropped_one_by_one_not_fatal(
    fleet: Callable[..., BotState], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    state = fleet()
    assert state.reply_cache is not None
    inbox = state.journal()
    inbox.receive("telegram:1:40", "telegram:1", {"n": 40})
    inbox.close()  # its process is gone: the entry is owed
    client = redis_server.client()
    try:
        client.set("qwenbot:history:telegram:1:", "{not json")
        client.set("qwenbot:reply:" + "r" * 64, '["not", "a", "reply"]')
        client.rpush("qwenbot:history:telegram:2:", "a list, not a string")  # WRONGTYPE
        client.hset("qwenbot:inbox:telegram:1:40", "payload", "{garbage")
    finally:
        client.close()
    assert state.history.load("telegram:1:") == []
    assert state.reply_cache.get("r" * 64) is None
    assert state.history.load("telegram:2:") == []  # refused by Redis, not an exception
    again = state.journal()
    assert taken_over(again, "telegram:1:") == []  # the unreadable entry is done, not replayed
    assert not again.receive("telegram:1:40", "telegram:1", {})  # and still refused
    state.history.save("telegram:1:", [ChatTurn("user", "fresh")])
    assert state.history.load("telegram:1:") == [ChatTurn("user", "fresh")]
    assert state.status() is not None and state.status().up  # type: ignore[union-attr]
    assert caplog.text.count("unreadable") >= 3


def test_a_redis_that_is_not_there_at_start_up_is_waited_out(tmp_path: Path) -> None:
    from tests.support.http_server import free_port

    settings = Settings(
        bot=BotSettings(history_dir=tmp_path / "h", inbox_dir=tmp_path / "i"),
        state=StateSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
    )
    state = open_state(settings)  # nothing listens: no exception
    try:
        inbox = state.journal()
        assert state.history.load("telegram:1:") == []
        assert inbox.receive("telegram:1:1", "telegram:1", {})  # answered, remembered here
        assert not inbox.receive("telegram:1:1", "telegram:1", {})
        assert inbox.pending("telegram:1:") == []
        assert state.limiter(6, 1, "chat").acquire("telegram:1") == 0.0
        down = state.status()
        assert down is not None and not down.up
    finally:
        state.close()
