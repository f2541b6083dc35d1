"""The inbox journal in Redis: every process of a fleet records what it takes in one place,
so a message delivered to two of them is answered once, and the messages of a process
that died are answered by another (or by it, once restarted), exactly once.

Each entry names its owner, the process answering it. A process proves it is alive with a
key that expires (`owner_ttl_s`) unless its heartbeat thread renews it; an entry owed by a
process whose key is gone is claimed by the next sweep that finds it gone twice in a row
(so a Redis that lost its keys in a restart does not hand over answers in progress).
Keys expire: a done entry after three days (Telegram re-sends for one), like SQLite's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bot.inbox import KEEP_DONE_S, InboxEntry, Replay, verdict
from bot.state.redis_link import RedisLink
from engine import dumps

log = logging.getLogger(__name__)

# KEYS: entry, owed set. ARGV: chat, received_at, payload, owner, keep_ms, inbox key.
RECEIVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'chat', ARGV[1], 'received_at', ARGV[2], 'payload', ARGV[3],
           'sent', '', 'owner', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
return 1
"""
# KEYS: entry, owed set. ARGV: done_at, keep_ms, inbox key. The payload is not needed any
# more; the entry stays, to refuse a redelivery.
DONE = """
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'done_at') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'done_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'payload', 'sent')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS: entry. ARGV: message id. Ids as text: Discord's do not fit Lua's doubles.
POSTED = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'done_at') == 1 then
  return 0
end
local sent = redis.call('HGET', KEYS[1], 'sent') or ''
if sent ~= '' then sent = sent .. ',' end
redis.call('HSET', KEYS[1], 'sent', sent .. ARGV[1])
return 1
"""
# KEYS: entry, the owner's alive key. ARGV: the owner seen, the new owner.
CLAIM = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
if redis.call('HEXISTS', KEYS[1], 'done_at') == 1 then return false end
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return redis.call('HMGET', KEYS[1], 'chat', 'received_at', 'payload', 'sent')
"""


class RedisInbox:
    """bot.inbox.Journal over Redis, shared by every process of the bot."""

    def __init__(
        self,
        link: RedisLink,
        replay_within_s: float,
        owner_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replay_within_s = replay_within_s
        self.sweep_s: float | None = owner_ttl_s / 2
        self.owner = uuid.uuid4().hex[:16]
        self._link = link
        self._clock = clock
        self._owed = link.key("inbox-owed")
        self._memory: set[str] = set()  # keys taken while Redis was down
        self._suspects: dict[str, str] = {}  # entry -> its owner, found gone at the last sweep
        self._scripts = {
            name: link.client.register_script(source)
            for name, source in (("receive", RECEIVE), ("done", DONE), ("posted", POSTED),
                                 ("claim", CLAIM))
        }  # fmt: skip
        self._heartbeat = OwnerHeartbeat(link, link.key("alive", self.owner), owner_ttl_s)
        self._heartbeat.start()

    def receive(self, key: str, chat: str, payload: dict[str, Any]) -> bool:
        """Record a message before any work on it; False when any process took it before."""
        if key in self._memory:
            return False
        arguments = [chat, repr(self._clock()), dumps(payload), self.owner,
                     round(KEEP_DONE_S * 1000), key]  # fmt: skip
        taken = self._run("receive", [self._entry(key), self._owed], arguments, None)
        if taken is None:  # Redis down: this process remembers it, and answers
            self._memory.add(key)
            return True
        return bool(taken)

    def done(self, key: str) -> None:
        """The message was answered, or deliberately not: never replay it."""
        arguments = [repr(self._clock()), round(KEEP_DONE_S * 1000), key]
        self._run("done", [self._entry(key), self._owed], arguments, 0)

    def posted(self, key: str, message_id: int) -> None:
        """A message was posted for this entry's answer: taken back if it is interrupted."""
        self._run("posted", [self._entry(key)], [str(message_id)], 0)

    def pending(self, prefix: str) -> list[InboxEntry]:
        """Entries of one platform owed by processes that are gone, oldest first; claimed
        for this process, so no other answers them too."""
        owners = self._link.run(lambda r: self._owners(r, prefix), None, "inbox sweep")
        if owners is None:
            return []
        suspects, self._suspects = self._suspects, {}
        entries = []
        for key, owner in owners:
            if suspects.get(key) != owner:
                self._suspects[key] = owner  # gone once: claimed if still gone next sweep
                continue
            keys = [self._entry(key), self._link.key("alive", owner)]
            claimed = self._run("claim", keys, [owner, self.owner], None)
            if claimed:
                entry = self._entry_of(key, claimed)
                if entry is not None:
                    entries.append(entry)
        return entries

    def replay(self, entry: InboxEntry) -> Replay:
        """Answer, apologise or drop (by the entry's age: bot.inbox.verdict)."""
        return verdict(entry, self.replay_within_s)

    def close(self) -> None:
        """Stop the heartbeat and say this process is gone: its entries left owed (a
        shutdown's cancelled answers) are taken over at once, not after the TTL."""
        self._heartbeat.stop()
        self._link.run(lambda r: r.delete(self._link.key("alive", self.owner)), 0, "inbox close")

    def _owners(self, r: Any, prefix: str) -> list[tuple[str, str]]:
        """(entry, owner) of this platform's owed entries whose owner is not alive."""
        keys = [k for k in r.zrange(self._owed, 0, -1) if k.startswith(prefix)]
        with r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(self._entry(key), "owner")
            owners = pipe.execute()
        with r.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(self._link.key("alive", owner or "-"))
            alive = pipe.execute()
        found = []
        for key, owner, live in zip(keys, owners, alive, strict=True):
            if owner is None:  # the entry expired: nothing owed any more
                r.zrem(self._owed, key)
            elif owner != self.owner and not live:
                found.append((key, owner))
        return found

    def _entry_of(self, key: str, fields: list[str | None]) -> InboxEntry | None:
        chat, received_at, payload, sent = fields
        try:
            data = json.loads(payload or "")
            if not isinstance(data, dict):
                raise ValueError("not an object")
            posted = tuple(int(part) for part in (sent or "").split(",") if part)
            received = float(received_at or 0.0)
        except (ValueError, TypeError) as error:
            log.warning("inbox entry %s was unreadable (%s); dropped it", key, error)
            self.done(key)
            return None
        age = max(0.0, self._clock() - received)
        return InboxEntry(key, chat or "", received, data, age, posted)

    def _run(self, script: str, keys: list[str], arguments: list[Any], fallback: Any) -> Any:
        run = self._scripts[script]
        return self._link.run(
            lambda r: run(keys=keys, args=arguments, client=r), fallback, f"inbox {script}"
        )

    def _entry(self, key: str) -> str:
        return self._link.key("inbox", key)


class OwnerHeartbeat:
    """A thread renewing this process's alive key, whatever the event loop is doing (a
    long prompt read must not look like death); it also notices a Redis that came back."""

    def __init__(self, link: RedisLink, key: str, ttl_s: float) -> None:
        self._link = link
        self._key = key
        self._ttl_ms = round(ttl_s * 1000)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qwenbot-heartbeat", daemon=True)

    def start(self) -> None:
        """Say this process is alive now, then keep saying it."""
        self._renew()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the key then expires unless deleted)."""
        self._stopped.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stopped.wait(self._ttl_ms / 5000):
            self._renew()

    def _renew(self) -> None:
        self._link.run(lambda r: r.set(self._key, "1", px=self._ttl_ms), None, "heartbeat")
