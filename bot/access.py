"""Who may talk to the bot, and how often."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from bot.messages import IncomingMessage
from bot.settings import BotSettings


class Access(Enum):
    """The outcome of an access check."""

    ALLOWED = "allowed"
    NOT_ALLOWED = "not_allowed"  # not on an allow-list: told so in private chats
    BLOCKED = "blocked"  # on the block list: never answered at all


class AccessPolicy:
    """Allow-lists (empty = everyone) and a block list of user or chat ids."""

    def __init__(self, settings: BotSettings) -> None:
        self._settings = settings

    def check(self, message: IncomingMessage) -> Access:
        """Decide whether this message may be answered."""
        s = self._settings
        if message.user_id in s.blocked_ids or message.chat_id in s.blocked_ids:
            return Access.BLOCKED
        if s.allowed_user_ids and message.user_id not in s.allowed_user_ids:
            return Access.NOT_ALLOWED
        if s.allowed_chat_ids and message.chat_id not in s.allowed_chat_ids:
            return Access.NOT_ALLOWED
        return Access.ALLOWED

    def is_admin(self, message: IncomingMessage) -> bool:
        """Admins by id or by the platform's word; the console user is the operator."""
        return (
            message.platform == "console"
            or message.platform_admin
            or message.user_id in self._settings.admin_ids
        )


class Limiter(Protocol):
    """Token buckets per user: RateLimiter (one process) or bot.state's Redis one (a fleet)."""

    def acquire(self, user: str) -> float:
        """Take one token: 0.0 if allowed, else the seconds until the next one is available."""
        ...

    def first_refusal(self, user: str, wait_s: float) -> bool:
        """True for the first refusal of a cooldown window."""
        ...


class RateLimiter:
    """A token bucket per user: `burst` messages at once, refilled at `per_minute`."""

    _MAX_TRACKED = 10_000  # forget idle, refilled users past this many

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, updated at)
        self._told_until: dict[str, float] = {}  # user -> end of the window they were told of

    def acquire(self, user: str) -> float:
        """Take one token: 0.0 if allowed, else the seconds until the next one is available."""
        now = self._clock()
        tokens, updated = self._buckets.get(user, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens >= 1.0:
            self._buckets[user] = (tokens - 1.0, now)
            self._forget_idle(now)
            return 0.0
        self._buckets[user] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def first_refusal(self, user: str, wait_s: float) -> bool:
        """True for the first refusal of a cooldown window (the user is told to wait
        `wait_s`); False for the rest of that window, which then go unanswered."""
        now = self._clock()
        if now < self._told_until.get(user, float("-inf")):
            return False
        self._told_until[user] = now + wait_s
        return True

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) <= self._MAX_TRACKED:
            return
        full_after = self._burst / self._rate
        self._buckets = {
            user: state for user, state in self._buckets.items() if now - state[1] < full_after
        }
        self._told_until = {user: t for user, t in self._told_until.items() if t > now}
