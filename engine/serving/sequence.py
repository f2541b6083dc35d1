"""A request as the scheduler and the model runner see it (nano-vllm's Sequence)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

import torch

from engine.serving.reply_output import Job, ReplyOutput

_arrivals = itertools.count()


class Phase(Enum):
    """Where a sequence is in its life."""

    WAITING = auto()  # queued: no model state yet
    PREFILL = auto()  # admitted: its prompt is being read, a chunk per step
    DECODE = auto()  # one new token per step
    DONE = auto()


@dataclass(eq=False)
class Sequence:
    """One reply in the making: its job, its output, and the model's state for it."""

    job: Job
    output: ReplyOutput
    phase: Phase = Phase.WAITING
    state: Any = None  # the backend's memory of this sequence (a KV cache)
    computed: int = 0  # prompt tokens already in `state`
    generated: list[int] = field(default_factory=list)  # sampled so far, stop token included
    generator: torch.Generator | None = None  # for sampling, seeded per request
    draft: Any = None  # speculation's DraftState, once this greedy reply is guessed for
    arrival: int = field(default_factory=lambda: next(_arrivals))

    @property
    def prompt_ids(self) -> list[int]:
        """The rendered prompt's tokens."""
        return self.job.prompt_ids

    @property
    def next_token(self) -> int:
        """The last sampled token, which the next decode step reads."""
        return self.generated[-1]

    @property
    def unread(self) -> int:
        """Prompt tokens the model has still to read."""
        return len(self.job.prompt_ids) - self.computed

    @property
    def owner(self) -> str:
        """The fairness unit: the asking user, else the request itself."""
        return self.job.owner if self.job.owner is not None else f"#{self.arrival}"

    def tokens_in_state(self) -> list[int]:
        """The tokens whose keys and values the state holds, in order."""
        if self.unread:
            return self.job.prompt_ids[: self.computed]
        return [*self.job.prompt_ids, *self.generated[:-1]]  # the last one is not read yet
