"""Each step's work: which waiting requests join the batch, which prompt chunks are read,
which sequences decode a token (nano-vllm's scheduler, with admission fair between users)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.serving.sequence import Phase, Sequence


@dataclass(frozen=True)
class StepPlan:
    """One step: prompt chunks to read (sequence, token count), then one decode batch."""

    prefill: list[tuple[Sequence, int]]
    decode: list[Sequence]

    @property
    def empty(self) -> bool:
        """Nothing to run."""
        return not self.prefill and not self.decode


class Scheduler:
    """Waiting and running sequences; not thread-safe (the worker holds its lock)."""

    def __init__(self, max_batch: int, prefill_tokens: int, chunked: bool = True) -> None:
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens  # prompt tokens read per step, all chunks together
        self.chunked = chunked  # False: a prompt is read whole (backends without chunking)
        self.waiting: list[Sequence] = []  # in arrival order
        self.running: list[Sequence] = []  # admitted, in admission order
        self._admitted = 0  # admissions so far: a clock for round robin
        self._served: dict[str, int] = {}  # owner -> when it last had a request admitted

    def add(self, sequence: Sequence) -> None:
        """Queue a new sequence."""
        self.waiting.append(sequence)

    def withdraw(self, sequence: Sequence) -> bool:
        """Drop a sequence that has not been admitted; False when it is not waiting."""
        if sequence in self.waiting:
            self.waiting.remove(sequence)
            self._forget_if_idle(sequence.owner)
            return True
        return False

    def finish(self, sequence: Sequence) -> None:
        """A running sequence leaves the batch."""
        sequence.phase = Phase.DONE
        if sequence in self.running:
            self.running.remove(sequence)
        self._forget_if_idle(sequence.owner)

    def _forget_if_idle(self, owner: str) -> None:
        """An owner with nothing left waiting or running starts afresh when it returns."""
        if not any(s.owner == owner for s in (*self.waiting, *self.running)):
            self._served.pop(owner, None)

    def queued_by(self, owner: str) -> int:
        """Waiting sequences of one owner."""
        return sum(1 for sequence in self.waiting if sequence.owner == owner)

    def admission_order(self) -> list[Sequence]:
        """Waiting sequences in the order they will join: round robin between owners (an
        owner's n-th request, counting those running, goes in round n; within a round the
        owner served longest ago goes first), so one user's flood waits behind everyone
        else's first request."""
        held = Counter(sequence.owner for sequence in self.running)
        ranks: dict[Sequence, tuple[int, int, int]] = {}
        for sequence in self.waiting:  # arrival order
            owner = sequence.owner
            ranks[sequence] = (held[owner], self._served.get(owner, -1), sequence.arrival)
            held[owner] += 1
        return sorted(self.waiting, key=ranks.__getitem__)

    def positions(self) -> dict[Sequence, int]:
        """For each waiting sequence, how many requests will start before it."""
        full = 1 if len(self.running) >= self.max_batch else 0
        return {sequence: index + full for index, sequence in enumerate(self.admission_order())}

    def admit(self) -> list[Sequence]:
        """Move waiting sequences into free batch places; returns the newly admitted."""
        free = self.max_batch - len(self.running)
        joining = self.admission_order()[: max(0, free)]
        for sequence in joining:
            self.waiting.remove(sequence)
            sequence.phase = Phase.PREFILL
            self.running.append(sequence)
            self._served[sequence.owner] = self._admitted
            self._admitted += 1
        return joining

    def plan(self) -> StepPlan:
        """This step's prompt chunks (oldest admitted first, within the token budget) and
        every sequence that decodes. With nobody decoding there is nobody to stall: the
        budget grows to a whole batch of chunks, so prompts arriving together share one pass
        (one de-quantisation of the weights instead of one per chunk)."""
        decode = [sequence for sequence in self.running if sequence.phase is Phase.DECODE]
        prefill: list[tuple[Sequence, int]] = []
        budget = self.prefill_tokens * (1 if decode else self.max_batch)
        for sequence in self.running:
            if sequence.phase is not Phase.PREFILL or budget <= 0:
                continue
            count = min(sequence.unread, budget) if self.chunked else sequence.unread
            prefill.append((sequence, count))
            budget -= count
            if not self.chunked:
                break  # one whole prompt per step
        return StepPlan(prefill, decode)
