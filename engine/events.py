"""What a caller sends in (a request) and gets back (a stream of events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]  # a cached reply keeps its own


@dataclass(frozen=True)
class ChatTurn:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """A chat to continue; unset generation parameters come from the engine settings."""

    messages: tuple[ChatTurn, ...]
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    ignore_stop: bool = False  # benchmarks: generate exactly max_new_tokens
    stop: tuple[str, ...] = ()  # the reply ends before the first of these (API callers)
    owner: str | None = None  # who asks (a user): the queue is fair between owners
    conversation: str | None = None  # the chat this continues: its kept state may be reused


@dataclass(frozen=True)
class ReplyStats:
    """Speed figures of one reply."""

    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    decode_tps: float
    total_s: float
    queue_wait_s: float
    cache_hit: bool
    reused_tokens: int = 0  # prompt tokens whose state was kept from the chat's last turn


@dataclass(frozen=True)
class Queued:
    """The request waits; `ahead` requests will run before it, for about `wait_s` seconds."""

    ahead: int
    wait_s: float = 0.0


@dataclass(frozen=True)
class Started:
    """Generation (or a cache lookup that hit) has begun."""

    prompt_tokens: int


@dataclass(frozen=True)
class TokenText:
    """Newly visible reply text (think blocks already removed)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The whole visible reply and its stats."""

    text: str
    stats: ReplyStats
    finish_reason: FinishReason = "stop"
    token_ids: tuple[int, ...] = field(default=(), repr=False)
    lead: str = field(default="", repr=False)  # whitespace the model wrote before the text

    @property
    def as_generated(self) -> str:
        """The reply as the model wrote it, for the chat's history: the next prompt then
        repeats the tokens the engine kept state for (a dropped leading space would make
        it read the whole answer again)."""
        return self.lead + self.text


EngineEvent = Queued | Started | TokenText | Finished
