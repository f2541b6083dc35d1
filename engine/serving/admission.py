"""Admission by time: how long a waiting request will wait, from the speeds measured so far.

A request is refused only when the work ahead of it would keep its user waiting longer than
the engine's max_wait_s: a count of waiting requests says nothing about that (eight short
questions at batch 8 are a second's work; eight long pastes are a minute's). The estimate
replays the batch: every place in it frees when its reply is expected to end, and each
waiting request, in the order it will be admitted, takes the place that frees first.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from engine.serving.sequence import Sequence

# Until something is measured: a slow CPU's speeds, so the first estimates err long.
PRIOR_STEP_S = 0.08  # one decode step of the whole batch
PRIOR_PREFILL_TPS = 300.0  # prompt tokens read per second
SMOOTHING = 0.2  # weight of the newest measurement in the running averages
MIN_REMAINING_TOKENS = 16  # a reply past its expected length is assumed to end soon


class Rates:
    """Running averages of the speeds that decide a wait. Only the worker thread writes
    them, one float at a time, so a reader sees each whole: no lock on the decode step."""

    def __init__(self, max_new_tokens: int) -> None:
        self.step_s = PRIOR_STEP_S
        self.prefill_tps = PRIOR_PREFILL_TPS
        self.reply_tokens = max_new_tokens / 2  # until replies are seen: half the limit

    def record_step(self, seconds: float) -> None:
        """One decode step of the batch took `seconds`."""
        self.step_s += SMOOTHING * (seconds - self.step_s)

    def record_prefill(self, tokens: int, seconds: float) -> None:
        """`tokens` prompt tokens were read in `seconds`."""
        if tokens > 0 and seconds > 0:
            self.prefill_tps += SMOOTHING * (tokens / seconds - self.prefill_tps)

    def record_reply(self, tokens: int) -> None:
        """A reply ended after `tokens` tokens."""
        self.reply_tokens += SMOOTHING * (tokens - self.reply_tokens)

    def remaining_s(self, sequence: Sequence) -> float:
        """Seconds until a sequence's reply is expected to end (it may be running)."""
        limit = sequence.job.params.max_new_tokens
        expected = min(limit, max(1.0, self.reply_tokens))
        generated = len(sequence.generated)
        left = max(expected - generated, min(MIN_REMAINING_TOKENS, limit - generated), 1)
        return sequence.unread / self.prefill_tps + left * self.step_s


def expected_waits(
    running: Iterable[Sequence], waiting: list[Sequence], places: int, rates: Rates
) -> dict[Sequence, float]:
    """For each waiting sequence (in admission order), the seconds until it starts."""
    frees_at = [rates.remaining_s(sequence) for sequence in running]
    frees_at += [0.0] * max(0, places - len(frees_at))
    heapq.heapify(frees_at)
    waits = {}
    for sequence in waiting:
        start = heapq.heappop(frees_at)
        waits[sequence] = start
        heapq.heappush(frees_at, start + rates.remaining_s(sequence))
    return waits
