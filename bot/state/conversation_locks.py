"""One lock per conversation, so its messages are answered one at a time and its history
stays whole: in this process (asyncio), or across every process sharing a Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from bot.state.redis_link import RedisLink

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiter asks again for a lock another process holds

# KEYS: the lock, its queue. ARGV: our token, the lease (ms), the waiters' key prefix.
# Called by a waiter until it returns 1: joins the queue once, drops waiters at its head
# that died (their keys ran out), and takes the lock only at the head: first come, first
# served across every process.
TAKE_TURN = """
redis.call('SET', ARGV[3] .. ARGV[1], '1', 'PX', ARGV[2])
if not redis.call('LPOS', KEYS[2], ARGV[1]) then redis.call('RPUSH', KEYS[2], ARGV[1]) end
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if head == ARGV[1] or redis.call('EXISTS', ARGV[3] .. head) == 1 then break end
  redis.call('LPOP', KEYS[2])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[1] then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('LPOP', KEYS[2])
redis.call('DEL', ARGV[3] .. ARGV[1])
return 1
"""
# Extend or free the lock only while it is still ours (a lease that ran out may be another's).
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ConversationLocks(Protocol):
    """`async with locks.hold(key):` runs one conversation's turns one after another."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Wait for the conversation's turn, and hold it for the block."""
        ...


class LocalLocks:
    """asyncio locks per conversation key (first come, first served), freed when unused."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for the conversation's turn in this process."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield


class RedisLocks:
    """A lease in Redis per conversation (SET NX PX with a random token), extended while its
    answer runs, and a queue in front of it, so a chat's messages are answered in the order
    they reached the bot whichever process took each. A process that dies holding the lease
    frees it after `lease_s`; one that dies waiting leaves the queue as fast. While Redis is
    down, this process's own lock keeps order among its messages (logged by the link)."""

    def __init__(self, link: RedisLink, lease_s: float) -> None:
        self._link = link
        self._lease_ms = round(lease_s * 1000)
        self._local = LocalLocks()
        self._take_turn = link.client.register_script(TAKE_TURN)
        self._extend = link.client.register_script(EXTEND)
        self._release = link.client.register_script(RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for the conversation's turn in every process sharing the Redis."""
        name, queue = self._link.key("lock", key), self._link.key("lock-queue", key)
        token = secrets.token_hex(16)
        try:
            held = await self._acquire(name, queue, token)
        except asyncio.CancelledError:  # gave up waiting (a shutdown): out of the queue
            self._link.run(lambda r: r.lrem(queue, 0, token), 0, "chat lock queue")
            raise
        if not held:
            async with self._local.hold(key):
                yield
            return
        keeper = asyncio.create_task(self._keep(name, token))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self._link.run(
                lambda r: self._release(keys=[name], args=[token], client=r),
                0,
                "chat lock release",
            )

    async def _acquire(self, name: str, queue: str, token: str) -> bool:
        """Poll until it is our turn (True), or until Redis is found down (False)."""
        waiters = self._link.key("lock-waiter", "")
        arguments: list[str | int] = [token, self._lease_ms, waiters]
        while True:
            got = self._link.run(
                lambda r: self._take_turn(keys=[name, queue], args=arguments, client=r),
                "down",
                "chat lock",
            )
            if got == "down":
                return False
            if got == 1:
                return True
            await asyncio.sleep(POLL_S)

    async def _keep(self, name: str, token: str) -> None:
        """Extend the lease every third of it while the answer runs."""
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            kept = self._link.run(
                lambda r: self._extend(keys=[name], args=[token, self._lease_ms], client=r),
                None,
                "chat lock extension",
            )
            if kept == 0:
                log.warning("the lock on %s ran out while answering; another may answer", name)
