"""The one contract between adapters and the chat service: a message in, reply events out."""

from __future__ import annotations

from dataclasses import dataclass

from engine import EngineError, PromptTooLong, ReplyStats


@dataclass(frozen=True)
class ReplyContext:
    """The message this one replies to."""

    text: str
    from_bot: bool


@dataclass(frozen=True)
class IncomingMessage:
    """A platform message, already stripped of platform details (and of the bot's mention)."""

    platform: str
    chat_id: int
    user_id: int
    user_name: str
    text: str
    is_private: bool
    mentions_bot: bool = False
    reply_to: ReplyContext | None = None
    thread_id: int | None = None  # forum topic or Discord thread: history is kept per thread
    keep_history: bool = True  # False for one-shot questions (piped console, scripts)
    # A reply chain the platform walked (oldest first, ending with reply_to): when given,
    # it is this message's context instead of the chat's stored history.
    reply_chain: tuple[ReplyContext, ...] = ()
    platform_admin: bool = False  # the platform vouches for admin rights (e.g. a Discord role)
    language: str | None = None  # the sender's language tag as the platform gives it ("vi-VN")
    retry: bool = False  # answer again (sampled afresh), replacing the last answer in the history

    @property
    def conversation_key(self) -> str:
        """Whose history this message belongs to."""
        thread = "" if self.thread_id is None else str(self.thread_id)
        return f"{self.platform}:{self.chat_id}:{thread}"

    @property
    def addressed_to_bot(self) -> bool:
        """Private chats always; groups only on a mention or a reply to the bot."""
        replied_to_bot = self.reply_to is not None and self.reply_to.from_bot
        return self.is_private or self.mentions_bot or replied_to_bot


@dataclass(frozen=True)
class QueuePosition:
    """The reply waits behind `ahead` others, for about `wait_s` seconds; adapters show it
    until text arrives."""

    ahead: int
    wait_s: float = 0.0


@dataclass(frozen=True)
class Reading:
    """The model is reading a long message (`tokens` long); adapters show it until text
    arrives."""

    tokens: int


@dataclass(frozen=True)
class ReplyText:
    """A piece of the model's reply, to append to what is shown."""

    text: str


@dataclass(frozen=True)
class ReplyDone:
    """The model's whole reply; the footer (speed figures) goes under it when set."""

    text: str
    footer: str | None
    stats: ReplyStats
    finish_reason: str = "stop"  # "stop", "length" or "cancelled", as the engine said


@dataclass(frozen=True)
class Notice:
    """A complete message that is not from the model: help, refusals, apologies."""

    text: str
    is_error: bool = False  # the request was refused or failed (scripts exit non-zero)


class ReplyRefused(Exception):
    """A request the engine would not answer, for adapters that answer in their own terms
    (the HTTP API); `kind` is the engine's label (too_long, overloaded, not_ready, ...)."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


ReplyEvent = QueuePosition | Reading | ReplyText | ReplyDone | Notice


def refusal_of(error: EngineError) -> ReplyRefused:
    """An engine error in the terms of a caller that answers it itself (the HTTP API)."""
    if isinstance(error, PromptTooLong):
        message = (f"the conversation is {error.tokens} tokens; the model takes at most "
                   f"{error.limit} with room for the reply")  # fmt: skip
        return ReplyRefused(error.kind, message)
    # Waiting helps these: the queue drains, the model finishes loading.
    wait = getattr(error, "wait_s", None) or 5.0
    waits = {"overloaded", "too_many_queued", "not_ready", "remote_unavailable"}
    retry = wait if error.kind in waits else None
    return ReplyRefused(error.kind, str(error), retry)
