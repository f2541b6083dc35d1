"""One reply's output on the worker thread: detokenise, hide think blocks, time, emit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.events import Finished, FinishReason, ReplyStats, Started, TokenText
from engine.loading.decode_loop import SamplingParams
from engine.text.detokenizer import IncrementalDetokenizer
from engine.text.stop_scanner import StopScanner
from engine.text.think_filter import ThinkFilter

if TYPE_CHECKING:
    from engine.text.tokenizing import TextTokenizer


@dataclass(eq=False)
class Job:
    """A prepared request waiting for, or running on, the worker."""

    prompt_ids: list[int]
    params: SamplingParams
    starts_in_think: bool
    emit: Callable[[object], None]  # thread-safe hand-off to the waiting consumer
    owner: str | None = None  # who asked (a user): the fairness unit of the queue
    conversation: str | None = None  # the chat it continues: whose retained state it may take
    submitted_at: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)


class ReplyOutput:
    """Turns a job's sampled tokens into Started, TokenText... and Finished events."""

    def __init__(self, job: Job, tokenizer: TextTokenizer, stop_ids: frozenset[int]) -> None:
        self.job = job
        self.stop_ids = frozenset() if job.params.ignore_stop else stop_ids
        self.token_ids: list[int] = []  # generated, stop token excluded
        self.finish: FinishReason | None = None
        self.reused_tokens = 0  # prompt tokens taken from a retained conversation
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._think = ThinkFilter(starts_inside=job.starts_in_think)
        self._stop = StopScanner(job.params.stop)
        self._visible: list[str] = []
        self._started_at = time.perf_counter()
        self._first_at: float | None = None
        self._last_at = self._started_at

    def start(self) -> None:
        """The job leaves the queue: its prompt is about to be read."""
        self._started_at = self._last_at = time.perf_counter()
        self.job.emit(Started(prompt_tokens=len(self.job.prompt_ids)))

    def push(self, token: int) -> bool:
        """Take one sampled token; True when the reply is complete (stop or length)."""
        self._last_at = time.perf_counter()
        if self._first_at is None:
            self._first_at = self._last_at
        if token in self.stop_ids:
            self.finish = "stop"
            return True
        self.token_ids.append(token)
        self._show(self._think.push(self._detokenizer.push(token)))
        if self._stop.stopped:
            self.finish = "stop"
            return True
        if len(self.token_ids) >= self.job.params.max_new_tokens:
            self.finish = "length"
            return True
        return False

    def close(self, reason: FinishReason | None = None) -> Finished:
        """Flush what is held back and emit Finished (reason: why, if not already known)."""
        finish: FinishReason = self.finish or reason or "cancelled"
        self._show(self._think.push(self._detokenizer.flush()) + self._think.flush())
        self._show_held(self._stop.flush())
        generated = len(self.token_ids)
        first_at = self._first_at if self._first_at is not None else self._last_at
        window = self._last_at - first_at
        stats = ReplyStats(
            prompt_tokens=len(self.job.prompt_ids),
            generated_tokens=generated,
            ttft_s=first_at - self._started_at,
            decode_tps=(generated - 1) / window if generated > 1 and window > 0 else 0.0,
            total_s=self._last_at - self.job.submitted_at,
            queue_wait_s=self._started_at - self.job.submitted_at,
            cache_hit=False,
            reused_tokens=self.reused_tokens,
        )
        visible = "".join(self._visible)
        finished = Finished(visible, stats, finish, tuple(self.token_ids), self._think.lead)
        self.job.emit(finished)
        return finished

    def _show(self, text: str) -> None:
        self._show_held(self._stop.push(text) if text else "")

    def _show_held(self, text: str) -> None:
        if text:
            self._visible.append(text)
            self.job.emit(TokenText(text))
