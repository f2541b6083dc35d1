"""How much the worker takes on, from the engine's settings."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import EngineSettings
from engine.serving.speculation import Speculator


@dataclass(frozen=True)
class WorkerLimits:
    """How much the worker takes on."""

    queue_size: int  # waiting requests before Overloaded, whatever the wait (a memory guard)
    max_wait_s: float  # the longest expected wait a new request is queued for
    max_new_tokens: int  # the usual reply limit (the first guess of a reply's length)
    per_owner: int  # waiting requests of one user before TooManyQueued
    max_batch: int  # sequences decoding together
    prefill_tokens: int  # prompt tokens read per step (a long prompt is read in chunks)
    conversation_tokens: int  # KV cache room taken for a conversation: longest prompt + reply
    speculate_tokens: int = 0  # tokens guessed per greedy reply and step (0: none)

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> WorkerLimits:
        """The limits the engine's settings set."""
        return cls(
            queue_size=settings.queue_size,
            max_wait_s=settings.max_wait_s,
            max_new_tokens=settings.max_new_tokens,
            per_owner=settings.max_queued_per_user,
            max_batch=settings.max_batch,
            prefill_tokens=settings.prefill_chunk_tokens,
            conversation_tokens=settings.max_input_tokens + settings.max_new_tokens,
            speculate_tokens=settings.speculate_tokens,
        )

    def speculator(self) -> Speculator | None:
        """Guessing by prompt lookup, within twice the batch's rows per step; None when off."""
        if self.speculate_tokens == 0:
            return None
        return Speculator(self.speculate_tokens, max_rows=2 * max(self.max_batch, 8))
