"""The inference servers of a remote backend: which are up, how busy each is, and a health
check that brings a failed one back into use once it answers again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from engine.errors import Overloaded, RemoteUnavailable
from engine.serving.stats import ServerStatus

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 2.0  # how often a server that failed is asked whether it is back


@dataclass
class RemoteServer:
    """One OpenAI-compatible base URL (…/v1) and what we know of it."""

    url: str
    limit: int  # requests at once (ENGINE__REMOTE_CONCURRENCY)
    up: bool = True
    model: str | None = None  # the first model its /models lists, once asked
    in_flight: int = 0
    answered: int = 0
    failed: int = 0
    down_since: float | None = None

    def status(self) -> ServerStatus:
        """Where it stands now, for /stats and /metrics."""
        down_for = 0.0 if self.down_since is None else time.monotonic() - self.down_since
        return ServerStatus(self.url, self.up, self.in_flight, self.answered, self.failed, down_for)


class RemotePool:
    """Picks the least busy server that is up; a failed one is health-checked until it
    answers /models again. Waits (up to `max_wait_s`) when every server is at its limit."""

    def __init__(
        self, urls: tuple[str, ...], limit: int, client: httpx.AsyncClient, max_wait_s: float
    ) -> None:
        self.servers = [RemoteServer(url, limit) for url in urls]
        self._client = client
        self._max_wait_s = max_wait_s
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()  # a slot freed, or a server came back

    async def check_all(self) -> None:
        """Ask every server once (at start-up): the ones that do not answer start as down."""
        answers = await asyncio.gather(*(self._healthy(server) for server in self.servers))
        for server, healthy in zip(self.servers, answers, strict=True):
            if not healthy:
                self.mark_down(server, "no answer at start-up")

    @contextlib.asynccontextmanager
    async def slot(self, tried: set[str]) -> AsyncIterator[RemoteServer]:
        """A server that is up, not in `tried`, with a free slot; held for the block.
        Raises RemoteUnavailable when none is up, Overloaded when all stay busy too long."""
        deadline = time.monotonic() + self._max_wait_s
        while True:
            usable = [s for s in self.servers if s.up and s.url not in tried]
            if not usable:
                raise RemoteUnavailable(self._why_none(tried))
            free = [s for s in usable if s.in_flight < s.limit]
            if free:
                break
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise Overloaded(sum(s.in_flight for s in usable))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        server = min(free, key=lambda s: s.in_flight)
        server.in_flight += 1
        try:
            yield server
        finally:
            server.in_flight -= 1
            self._changed.set()

    def mark_down(self, server: RemoteServer, why: str) -> None:
        """Stop sending to a server and health-check it until it answers again."""
        server.failed += 1
        if not server.up:
            return
        server.up, server.down_since = False, time.monotonic()
        log.warning("inference server %s is down (%s); using the others", server.url, why)
        self._checks[server.url] = asyncio.create_task(self._until_back(server))

    def statuses(self) -> tuple[ServerStatus, ...]:
        """Every server's status, for /stats and /metrics."""
        return tuple(server.status() for server in self.servers)

    async def close(self) -> None:
        """Stop the health checks."""
        for task in self._checks.values():
            task.cancel()
        for task in self._checks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._checks.clear()

    async def _until_back(self, server: RemoteServer) -> None:
        while not await self._healthy(server):  # noqa: ASYNC110  (polling another machine)
            await asyncio.sleep(HEALTH_EVERY_S)
        down_for = time.monotonic() - (server.down_since or time.monotonic())
        server.up, server.down_since = True, None
        self._checks.pop(server.url, None)
        self._changed.set()
        log.warning("inference server %s is back after %.0f s", server.url, down_for)

    async def _healthy(self, server: RemoteServer) -> bool:
        """GET /models answers 200 (and names the model it serves)."""
        try:
            response = await self._client.get(f"{server.url}/models", timeout=5.0)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            server.model = str(response.json()["data"][0]["id"])
        return True

    def _why_none(self, tried: set[str]) -> str:
        down = [s.url for s in self.servers if not s.up]
        if tried and not down:
            return "every inference server failed this reply"
        return f"no inference server is answering ({', '.join(down) or 'none configured'})"
