"""The bot's stores, chosen once by STATE__REDIS_URL: embedded (SQLite and diskcache
files, one process) or Redis (any number of processes on any number of machines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.access import Limiter, RateLimiter
from bot.history import ConversationHistory, HistoryStore
from bot.inbox import Inbox, Journal
from bot.service import ChatService
from bot.settings import Settings
from bot.state.conversation_locks import ConversationLocks, LocalLocks, RedisLocks
from bot.state.redis_inbox import RedisInbox
from bot.state.redis_limiter import RedisRateLimiter
from bot.state.redis_link import RedisLink, SharedStateStatus
from bot.state.redis_stores import RedisHistoryStore, RedisReplyCache

if TYPE_CHECKING:
    from engine import Engine, ReplyCache  # types only: opening the state loads no model


@dataclass
class BotState:
    """Everything the bot remembers, behind one interface per store."""

    settings: Settings
    history: ConversationHistory
    locks: ConversationLocks
    reply_cache: ReplyCache | None  # None: the engine opens its own disk cache
    link: RedisLink | None = None
    _journals: list[Journal] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """True when the state lives in Redis (several processes may share it)."""
        return self.link is not None

    def limiter(self, per_minute: float, burst: int, scope: str) -> Limiter:
        """Token buckets per user (`scope`: chat messages, HTTP keys, ...)."""
        if self.link is None:
            return RateLimiter(per_minute, burst)
        return RedisRateLimiter(self.link, per_minute, burst, scope)

    def chat_service(self, engine: Engine) -> ChatService:
        """The chat service on these stores."""
        bot = self.settings.bot
        return ChatService(
            engine,
            bot,
            self.history,
            limiter=self.limiter(bot.rate_limit_per_minute, bot.rate_limit_burst, "chat"),
            locks=self.locks,
            state_status=self.status,
        )

    def journal(self) -> Journal:
        """The inbox journal (closed with the state)."""
        bot = self.settings.bot
        journal: Journal
        if self.link is None:
            journal = Inbox(bot.inbox_dir, bot.replay_within_s)
        else:
            journal = RedisInbox(self.link, bot.replay_within_s, self.settings.state.owner_ttl_s)
        self._journals.append(journal)
        return journal

    def status(self) -> SharedStateStatus | None:
        """Whether the shared state's Redis answers; None for embedded stores."""
        return None if self.link is None else self.link.status()

    def close(self) -> None:
        """Close every store and the Redis connection."""
        for journal in self._journals:
            journal.close()
        self._journals.clear()
        self.history.close()
        if self.link is not None:
            self.link.close()


def open_state(settings: Settings) -> BotState:
    """Open the stores: Redis when STATE__REDIS_URL is set (reachable or not: a Redis that
    is down is waited out, not fatal), else the embedded files."""
    state = settings.state
    if state.redis_url is None:
        bot = settings.bot
        history = HistoryStore(bot.history_dir, bot.history_size_mb * 2**20)
        return BotState(settings, history, LocalLocks(), None)
    link = RedisLink(state.redis_url.get_secret_value(), state.prefix, state.timeout_s)
    return BotState(
        settings,
        RedisHistoryStore(link, state.history_ttl_days),
        RedisLocks(link, state.lock_lease_s),
        RedisReplyCache(link, state.cache_ttl_days),
        link,
    )
