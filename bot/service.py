"""The chat service: one message in, a stream of reply events out, for every platform."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from bot import formatting
from bot.access import Access, AccessPolicy, Limiter, RateLimiter
from bot.commands import COMMANDS, Command, help_text, parse_command, start_text
from bot.history import ConversationHistory, trim_to_budget, without_last_answer
from bot.i18n import Translator, translator_for
from bot.message_text import chain_turns, normalize_text, with_quote
from bot.messages import (
    IncomingMessage,
    Notice,
    QueuePosition,
    Reading,
    ReplyDone,
    ReplyEvent,
    ReplyText,
    refusal_of,
)
from bot.request_counts import ANSWERED, RequestCounts
from bot.settings import BotSettings
from bot.state.conversation_locks import ConversationLocks, LocalLocks
from bot.state.redis_link import SharedStateStatus
from bot.stats_report import shared_state_line, stats_text
from engine import (
    ChatTurn,
    Engine,
    EngineError,
    Finished,
    GenerationRequest,
    Queued,
    Started,
    StatsSnapshot,
    TokenText,
)

log = logging.getLogger(__name__)

RETRY_TEMPERATURE = 0.7  # a retry of a greedy answer samples, so that it can differ
# A message this long takes seconds to read (~450 tokens/s on 2 cores): say so meanwhile.
READING_NOTICE_TOKENS = 1000


def _ours(command: Command | None) -> bool:
    """A command for this bot: in groups a bare `/help` is for every bot there, another
    bot's `/weather` is not ours."""
    return command is not None and command.target is None and command.name in COMMANDS


@dataclass(frozen=True)
class ReplyOptions:
    """How a caller wants its reply generated; None: the engine's setting."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()  # the reply ends before the first of these


class ChatService:
    """Access, commands, rate limits, history and the engine stream, for any adapter."""

    def __init__(
        self,
        engine: Engine,
        settings: BotSettings,
        history: ConversationHistory,
        *,
        limiter: Limiter | None = None,
        locks: ConversationLocks | None = None,
        state_status: Callable[[], SharedStateStatus | None] = lambda: None,
    ) -> None:
        """limiter, locks, state_status: the shared ones of a fleet (bot.state); by default
        this process's own."""
        self._engine = engine
        self._settings = settings
        self._history = history
        self._access = AccessPolicy(settings)
        self.requests = RequestCounts()
        self._limiter = limiter or RateLimiter(
            settings.rate_limit_per_minute, settings.rate_limit_burst
        )
        # One lock per conversation: its messages are answered in order, its history stays whole.
        self._locks = locks or LocalLocks()
        self.state_status = state_status  # the shared state's, for /stats and /metrics

    def ready(self) -> bool:
        """Whether the model is loaded and its worker answering."""
        return self._engine.ready

    def model_name(self) -> str:
        """The loaded model's short name."""
        return self._engine.effective.model

    def effective_summary(self) -> str:
        """What runs, in one line (model, backend, quantisation, threads)."""
        return self._engine.effective.summary()

    @property
    def max_file_bytes(self) -> int:
        """The largest text file adapters read as a message (BOT__MAX_FILE_BYTES)."""
        return self._settings.max_file_bytes

    def translator(self, message: IncomingMessage) -> Translator:
        """The language to answer this message's sender in (BOT__LANGUAGE, else theirs)."""
        return self.translator_for(message.language)

    def translator_for(self, language: str | None) -> Translator:
        """The language for a platform's language tag (BOT__LANGUAGE, when set, wins)."""
        return translator_for(language, self._settings.language)

    def expects_answer(self, message: IncomingMessage) -> bool:
        """Whether the bot would reply to this message at all (rate limits aside): an
        allowed user, addressing the bot or running one of its commands."""
        if self._access.check(message) is not Access.ALLOWED:
            return False
        return message.addressed_to_bot or _ours(parse_command(normalize_text(message.text)))

    async def handle(self, message: IncomingMessage) -> AsyncGenerator[ReplyEvent, None]:
        """Answer one message; yields nothing when the bot should stay silent."""
        access = self._access.check(message)
        if access is Access.BLOCKED:
            return
        text = normalize_text(message.text)
        command = parse_command(text)
        if not message.addressed_to_bot and not _ours(command):
            return
        t = self.translator(message)
        if access is Access.NOT_ALLOWED:
            if message.is_private:
                yield Notice(formatting.not_allowed(t), is_error=True)
            return
        if command is not None and command.name != "ask":
            yield Notice(self._run_command(t, command, message))
            return
        if command is not None:  # `/ask question`: how groups address a bot by command
            text = command.args
        user = f"{message.platform}:{message.user_id}"
        wait = self._limiter.acquire(user)
        if wait > 0:
            self.requests.record(message.platform, "rate_limited")
            # One notice per flood: every reply would count against the platform's limits
            # for the whole bot, and the user knows after the first.
            if self._limiter.first_refusal(user, wait):
                yield Notice(formatting.slow_down(t, wait), is_error=True)
            else:
                log.debug("rate limited %s again; no second notice", user)
            return
        if not text:
            yield Notice(formatting.empty_message(t))
            return
        async for event in self._answer(t, message, text):
            yield event

    def _input_limit(self, system: ChatTurn) -> int:
        """The longest message answered: the setting, within what the model's context (less
        the system prompt, the chat template and room for the reply) leaves."""
        overhead = self._engine.count_tokens([system, ChatTurn("user", "")])
        return max(1, min(self._settings.max_input_tokens, self._engine.prompt_limit() - overhead))

    def _run_command(self, t: Translator, command: Command, message: IncomingMessage) -> str:
        if command.name == "start":
            return start_text(t)
        if command.name == "reset":
            self._history.clear(message.conversation_key)
            self._engine.forget(message.conversation_key)
            return formatting.history_cleared(t)
        if command.name == "stats":
            if not self._access.is_admin(message):
                return formatting.admin_only(t)
            state = self.state_status()
            extra = [shared_state_line(t, state)] if state is not None else []
            return stats_text(t, self._engine.snapshot(), extra)
        if command.name == "stop":  # adapters stop a reply in progress before it gets here
            return formatting.nothing_to_stop(t)
        return help_text(t)  # /help and unknown commands: help, never a model call

    def _retry_sampling(self) -> dict[str, Any]:
        """A retried answer is sampled with a fresh seed, so it can differ from the last one
        (at the engine's temperature, or RETRY_TEMPERATURE where that is greedy)."""
        temperature = self._engine.settings.temperature or RETRY_TEMPERATURE
        return {"temperature": temperature, "seed": secrets.randbelow(2**31)}

    async def _answer(
        self, t: Translator, message: IncomingMessage, text: str
    ) -> AsyncGenerator[ReplyEvent, None]:
        system = ChatTurn("system", self._settings.system_prompt)
        try:
            tokens = self._engine.count_text_tokens(text)
            limit = self._input_limit(system)
        except EngineError as error:
            yield Notice(formatting.error_text(t, error), is_error=True)
            return
        if tokens > limit:
            yield Notice(formatting.input_too_long(t, tokens, limit, len(text)), is_error=True)
            return
        key = message.conversation_key
        async with self._locks.hold(key):
            user = ChatTurn("user", with_quote(text, message))
            history = chain_turns(message)
            if not history and message.keep_history:
                history = self._history.load(key)
            if message.retry:  # the answer being replaced is not context for the new one
                history = without_last_answer(history, user)
            turns = trim_to_budget(
                system,
                history,
                user,
                self._engine.count_tokens,
                self._settings.history_token_budget,
            )
            request = GenerationRequest(
                messages=(system, *turns, user),
                owner=f"{message.platform}:{message.user_id}",
                conversation=key,
                **(self._retry_sampling() if message.retry else {}),
            )
            try:
                async with aclosing(self._engine.stream(request)) as events:
                    async for event in events:
                        if isinstance(event, Queued):
                            yield QueuePosition(event.ahead, event.wait_s)
                        elif isinstance(event, Started) and tokens >= READING_NOTICE_TOKENS:
                            yield Reading(tokens)  # a long paste takes seconds to read
                        elif isinstance(event, TokenText):
                            yield ReplyText(event.text)
                        elif isinstance(event, Finished):
                            # A reply chain carries its own context; the chat's stays as it was.
                            keep = message.keep_history and not message.reply_chain
                            self.requests.record(message.platform, ANSWERED)
                            yield self._finish(t, key if keep else None, [*turns, user], event)
            except EngineError as error:
                self.requests.record(message.platform, error.kind)
                log.info("reply failed (%s) in %s", error.kind, message.platform)
                yield Notice(formatting.error_text(t, error), is_error=True)

    async def converse(
        self, owner: str, turns: Sequence[tuple[str, str]], options: ReplyOptions
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Continue a whole conversation the caller holds as (role, text) turns (an API
        request; owner "<platform>:<who>"): nothing stored, no commands, no system prompt
        added. What the engine refuses is raised as ReplyRefused, for the caller to answer
        in its own terms."""
        platform = owner.split(":", 1)[0]
        request = GenerationRequest(
            messages=tuple(ChatTurn(role, normalize_text(text)) for role, text in turns),  # type: ignore[arg-type]
            max_new_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed,
            stop=options.stop,
            owner=owner,
        )
        try:
            async with aclosing(self._engine.stream(request)) as events:
                async for event in events:
                    if isinstance(event, Queued):
                        yield QueuePosition(event.ahead, event.wait_s)
                    elif isinstance(event, TokenText):
                        yield ReplyText(event.text)
                    elif isinstance(event, Finished):
                        self.requests.record(platform, ANSWERED)
                        # The caller shows the speed in its own terms: no chat footer.
                        yield ReplyDone(event.text, None, event.stats, event.finish_reason)
        except EngineError as error:
            self.requests.record(platform, error.kind)
            raise refusal_of(error) from error

    def snapshot(self) -> StatsSnapshot:
        """The engine's counters as of now (what /stats shows)."""
        return self._engine.snapshot()

    def _finish(
        self, t: Translator, key: str | None, turns: list[ChatTurn], finished: Finished
    ) -> ReplyDone:
        footer = formatting.footer(t, finished.stats) if self._settings.speed_footer else None
        text = finished.text.strip()
        if not text:
            empty = formatting.empty_reply(t)
            return ReplyDone(empty, footer, finished.stats, finished.finish_reason)
        if key is not None and finished.finish_reason != "cancelled":
            # Stored as generated (whitespace too, which the chat does not show): the next
            # prompt repeats the tokens the engine kept state for; only the new message is read.
            self._history.save(key, [*turns, ChatTurn("assistant", finished.as_generated)])
        return ReplyDone(text, footer, finished.stats, finished.finish_reason)
