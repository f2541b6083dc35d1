"""Chat history and the reply cache in Redis: JSON text under TTLs, never a pickle.

Every key carries a TTL, so a Redis with `maxmemory-policy volatile-lru` (or allkeys-lru)
sheds the least recently used chats and replies instead of refusing writes. Both stores
answer "nothing there" while Redis is down (RedisLink), and the bot answers on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from bot.history import parse_turns, turns_json
from bot.state.redis_link import RedisLink
from engine import CachedReply, ChatTurn, cached_reply, reply_json

log = logging.getLogger(__name__)

DAY_S = 24 * 3600


class RedisHistoryStore:
    """Conversation turns per conversation key, shared by every process of the bot."""

    def __init__(self, link: RedisLink, ttl_days: float) -> None:
        self._link = link
        self._ttl_s = max(1, round(ttl_days * DAY_S))

    def load(self, key: str) -> list[ChatTurn]:
        """The stored turns of a conversation, oldest first ([] when Redis is down)."""
        raw = self._link.run(lambda r: r.get(self._key(key)), None, "history read")
        if raw is None:
            return []
        try:
            return parse_turns(json.loads(raw))
        except (ValueError, KeyError, TypeError) as error:
            log.warning("an unreadable history in Redis was dropped: %s", error)
            self.clear(key)
            return []

    def save(self, key: str, turns: Sequence[ChatTurn]) -> None:
        """Replace the stored turns of a conversation; its TTL starts again."""
        text = turns_json(turns)
        self._link.run(lambda r: r.set(self._key(key), text, ex=self._ttl_s), None, "history write")

    def clear(self, key: str) -> None:
        """Forget a conversation."""
        self._link.run(lambda r: r.delete(self._key(key)), None, "history delete")

    def close(self) -> None:
        """Nothing to close: the link is closed by whoever opened it."""

    def _key(self, key: str) -> str:
        return self._link.key("history", key)


class RedisReplyCache:
    """The engine's deterministic-reply cache, shared by every process (engine.ReplyCache)."""

    def __init__(self, link: RedisLink, ttl_days: float) -> None:
        self._link = link
        self._ttl_s = max(1, round(ttl_days * DAY_S))

    @property
    def available(self) -> bool:
        """Always: while Redis is down, every lookup is a miss."""
        return True

    def get(self, key: str) -> CachedReply | None:
        """The cached reply for key, or None (a miss, Redis down, an unreadable entry)."""
        raw = self._link.run(lambda r: r.get(self._key(key)), None, "reply cache read")
        if raw is None:
            return None
        try:
            return cached_reply(json.loads(raw))
        except (ValueError, KeyError, TypeError) as error:
            log.warning("an unreadable entry in the reply cache was dropped: %s", error)
            self._link.run(lambda r: r.delete(self._key(key)), None, "reply cache delete")
            return None

    def put(self, key: str, reply: CachedReply) -> None:
        """Keep a reply for the TTL (best effort)."""
        text = reply_json(reply)
        self._link.run(
            lambda r: r.set(self._key(key), text, ex=self._ttl_s), None, "reply cache write"
        )

    def close(self) -> None:
        """Nothing to close: the link is closed by whoever opened it."""

    def _key(self, key: str) -> str:
        return self._link.key("reply", key)
