"""One Redis connection pool for every shared store, and whether Redis is answering.

A store never waits on a Redis that is down: after a failure the stores answer as if
nothing were there (no history, a cache miss, a local rate limit) until the next retry,
which backs off from half a second to ten. redis-py reconnects by itself on the next
command; the owner heartbeat (bot.state.owner_heartbeat) probes it even when no one
writes, so a Redis that comes back is noticed within a few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F")

FIRST_RETRY_S = 0.5
LAST_RETRY_S = 10.0


def redacted_url(url: str) -> str:
    """The URL without its password, for logs and /stats."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class SharedStateStatus:
    """Whether the shared state's Redis answers, for /stats and /metrics."""

    where: str  # its URL, password redacted
    up: bool
    down_for_s: float = 0.0


class RedisLink:
    """A redis-py client with a circuit breaker: `run(action, fallback)` is the only way
    the stores talk to Redis."""

    def __init__(
        self, url: str, prefix: str, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.where = redacted_url(url)
        self.prefix = prefix
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
        )
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY_S

    def key(self, *parts: str) -> str:
        """A key in this bot's namespace: `<prefix>:<part>:<part>`."""
        return ":".join((self.prefix, *parts))

    @property
    def up(self) -> bool:
        """False from a failed command until one succeeds again."""
        return self._down_since is None

    def run(self, action: Callable[[redis.Redis], T], fallback: F, what: str) -> T | F:
        """action(client), or `fallback` when Redis is down (then without trying until the
        next retry) or refuses the command (logged; one bad key is not an outage)."""
        if self._down_since is not None and self._clock() < self._retry_at:
            return fallback
        try:
            result = action(self.client)
        except redis.ResponseError as error:  # an answer, so Redis is up: a bad key or script
            log.warning("Redis refused the %s: %s", what, error)
            return fallback
        except redis.RedisError as error:
            self._failed(what, error)
            return fallback
        self._succeeded()
        return result

    def status(self) -> SharedStateStatus:
        """Where the shared state is and whether it answers now."""
        if self._down_since is None:
            return SharedStateStatus(self.where, up=True)
        return SharedStateStatus(self.where, up=False, down_for_s=self._clock() - self._down_since)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def _failed(self, what: str, error: redis.RedisError) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self._backoff = FIRST_RETRY_S
            log.warning(
                "Redis at %s is not answering (%s: %s); answering without shared state "
                "until it is back", self.where, what, error,
            )  # fmt: skip
        else:
            self._backoff = min(LAST_RETRY_S, self._backoff * 2)
        self._retry_at = now + self._backoff

    def _succeeded(self) -> None:
        if self._down_since is not None:
            log.warning(
                "Redis at %s is back after %.0f s; shared state in use again",
                self.where, self._clock() - self._down_since,
            )  # fmt: skip
            self._down_since = None
            self._backoff = FIRST_RETRY_S
