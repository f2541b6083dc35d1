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
    answer runs: a process that dies holding one frees it after `lease_s`. Inside a process,
    waiters queue on a local lock first, so only one of them polls Redis. While Redis is
    down, the local lock alone is held (logged by the link)."""

    def __init__(self, link: RedisLink, lease_s: float) -> None:
        self._link = link
        self._lease_ms = round(lease_s * 1000)
        self._local = LocalLocks()
        self._extend = link.client.register_script(EXTEND)
        self._release = link.client.register_script(RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for the conversation's turn in every process sharing the Redis."""
        async with self._local.hold(key):
            name = self._link.key("lock", key)
            token = secrets.token_hex(16)
            held = await self._acquire(name, token)
            keeper = asyncio.create_task(self._keep(name, token)) if held else None
            try:
                yield
            finally:
                if keeper is not None:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
                    self._link.run(
                        lambda r: self._release(keys=[name], args=[token], client=r),
                        0,
                        "chat lock release",
                    )

    async def _acquire(self, name: str, token: str) -> bool:
        """Poll until the lease is ours (True), or until Redis is found down (False)."""
        while True:
            got = self._link.run(
                lambda r: r.set(name, token, nx=True, px=self._lease_ms), "down", "chat lock"
            )
            if got == "down":
                return False
            if got:
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
