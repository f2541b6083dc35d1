"""The one thread that owns the model: it loads it, then runs the batch step after step.

Each step: drop cancelled sequences, let waiting ones join free batch places (fairly between
users), read prompt chunks, decode one token for every running sequence, hand each token to
its reply. A request joins at the next step and leaves the moment it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from engine.errors import EngineError, GenerationFailed, Overloaded, TooManyQueued
from engine.events import FinishReason, Queued
from engine.loading.bootstrap import LoadedModel
from engine.serving.admission import Rates, expected_waits
from engine.serving.model_runner import ModelRunner
from engine.serving.prefix_cache import PrefixCache
from engine.serving.reply_output import Job, ReplyOutput
from engine.serving.scheduler import Scheduler, StepPlan
from engine.serving.sequence import Phase, Sequence
from engine.serving.stats import EngineStats
from engine.serving.worker_limits import WorkerLimits

log = logging.getLogger(__name__)

# An idle worker waits this long after the first request before starting, so requests sent
# together (a busy group, a burst) read their prompts in one pass and decode in step.
GATHER_S = 0.03


@dataclass(frozen=True)
class Failed:
    """Worker-to-consumer event: this request failed with a typed error."""

    error: EngineError


class Worker:
    """Admission control and a fair queue in front of a single model-owning thread."""

    def __init__(
        self, limits: WorkerLimits, stats: EngineStats, prefix_cache: PrefixCache | None
    ) -> None:
        self._limits = limits
        self._stats = stats
        self._prefix_cache = prefix_cache
        self._scheduler = Scheduler(limits.max_batch, limits.prefill_tokens)
        self._rates = Rates(limits.max_new_tokens)
        self._sequences: dict[Job, Sequence] = {}
        self._told: dict[Sequence, int] = {}  # the queue position each waiting job was told
        self._closed = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._bundle: LoadedModel | None = None
        self._runner: ModelRunner | None = None

    def start(self, load: Callable[[], LoadedModel]) -> Future[LoadedModel]:
        """Start the thread; it runs load() first. The future resolves when the model is ready."""
        ready: Future[LoadedModel] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(load, ready), name="qwenbot-engine", daemon=True
        )
        self._thread.start()
        return ready

    @property
    def busy(self) -> bool:
        """A request is running or waiting."""
        with self._condition:
            return bool(self._sequences)

    def submit(self, job: Job) -> Queued:
        """Queue a job; returns its place (ahead 0: it joins at the next step). Raises
        Overloaded when the work ahead would make it wait longer than max_wait_s (or the
        queue is at its size limit), TooManyQueued when its user's share is taken."""
        with self._condition:
            if self._closed or self._bundle is None:
                raise GenerationFailed("the engine is shutting down")
            scheduler = self._scheduler
            # Requests that free batch places will take at the next step do not queue.
            free = self._limits.max_batch - len(scheduler.running)
            queued = max(0, len(scheduler.waiting) - max(0, free))
            if queued >= self._limits.queue_size:
                raise Overloaded(queued)
            output = ReplyOutput(job, self._bundle.tokenizer, self._bundle.stop_ids)
            sequence = Sequence(job, output)
            if scheduler.queued_by(sequence.owner) >= self._limits.per_owner:
                raise TooManyQueued(self._limits.per_owner)
            scheduler.add(sequence)
            positions, waits = scheduler.positions(), self._waits()
            ahead, wait = positions[sequence], waits.get(sequence, 0.0)
            if ahead and wait > self._limits.max_wait_s:
                scheduler.withdraw(sequence)
                raise Overloaded(queued, wait)
            self._sequences[job] = sequence
            self._told[sequence] = ahead
            self._announce_positions(positions, waits)  # the others' places, as just worked out
            self._condition.notify()
        return Queued(ahead, wait)

    def withdraw(self, job: Job) -> None:
        """Cancel a job: dropped if still queued, stopped at the next step if running."""
        job.cancelled.set()
        with self._condition:
            sequence = self._sequences.get(job)
            if sequence is not None and self._scheduler.withdraw(sequence):
                del self._sequences[job]
                self._told.pop(sequence, None)
                self._announce_positions()

    def forget(self, conversation: str) -> None:
        """Drop a conversation's kept state (its history was reset)."""
        if self._prefix_cache is not None:
            self._prefix_cache.forget(conversation)

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, cancel everything queued or running, and wait for the thread."""
        with self._condition:
            self._closed = True
            for sequence in self._scheduler.waiting:
                sequence.job.cancelled.set()
                sequence.job.emit(Failed(GenerationFailed("the engine is shutting down")))
                self._sequences.pop(sequence.job, None)
            self._scheduler.waiting.clear()
            for sequence in self._scheduler.running:
                sequence.job.cancelled.set()
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _waits(self) -> dict[Sequence, float]:
        """Each waiting sequence's expected wait in seconds (caller holds the lock)."""
        scheduler = self._scheduler
        order = scheduler.admission_order()
        return expected_waits(scheduler.running, order, scheduler.max_batch, self._rates)

    def _announce_positions(
        self,
        positions: dict[Sequence, int] | None = None,
        waits: dict[Sequence, float] | None = None,
    ) -> None:
        """Tell every waiting job whose place changed where it stands (caller holds the lock;
        it may pass the places and waits it has just worked out for the queue as it is)."""
        if positions is None:
            positions = self._scheduler.positions()
        self._stats.set_queue_depth(sum(1 for ahead in positions.values() if ahead > 0))
        changed = [s for s, ahead in positions.items() if self._told.get(s) != ahead]
        if not changed:
            return
        if waits is None:
            waits = self._waits()
        for sequence in changed:
            self._told[sequence] = positions[sequence]
            sequence.job.emit(Queued(positions[sequence], waits.get(sequence, 0.0)))

    def _run(self, load: Callable[[], LoadedModel], ready: Future[LoadedModel]) -> None:
        try:
            bundle = load()
            runner = ModelRunner(bundle, self._prefix_cache, self._limits.conversation_tokens,
                                 self._limits.speculator())  # fmt: skip
        except BaseException as error:  # noqa: BLE001  every load failure goes to the caller
            ready.set_exception(error)
            return
        with self._condition:
            self._bundle, self._runner = bundle, runner
            self._scheduler.chunked = runner.native
        ready.set_result(bundle)
        while self._next_step():
            pass
        log.debug("engine worker stopped")

    def _next_step(self) -> bool:
        """Run one step; False once the worker is closed and idle."""
        with self._condition:
            scheduler = self._scheduler
            if not scheduler.waiting and not scheduler.running and not self._closed:
                self._stats.record_idle()
                while not scheduler.waiting and not self._closed:
                    self._condition.wait()
                self._gather()
            if self._closed and not scheduler.running:
                return False
            cancelled = [s for s in scheduler.running if s.job.cancelled.is_set()]
            for sequence in cancelled:
                scheduler.finish(sequence)
            joining = scheduler.admit()
            for sequence in joining:
                self._told.pop(sequence, None)
            self._announce_positions()
        for sequence in cancelled:
            self._end(sequence, "cancelled")
        for sequence in joining:
            self._join(sequence)
        plan = scheduler.plan()
        if not plan.empty:
            self._step(plan)
        return True

    def _gather(self) -> None:
        """Wait GATHER_S for the rest of a burst (caller holds the lock)."""
        deadline = time.monotonic() + GATHER_S
        while not self._closed and len(self._scheduler.waiting) < self._limits.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._condition.wait(left)

    def _join(self, sequence: Sequence) -> None:
        assert self._runner is not None
        sequence.output.start()
        try:
            self._runner.attach(sequence)
        except Exception as error:  # one request's failure must not stop the others
            log.exception("could not start a reply")
            self._fail([sequence], error)

    def _step(self, plan: StepPlan) -> None:
        """Read this step's prompt chunks, then decode one token for every decoding sequence."""
        assert self._runner is not None
        if plan.prefill:
            started = time.perf_counter()
            try:
                sampled = self._runner.prefill(plan.prefill)
                read = sum(count for _, count in plan.prefill)
                self._rates.record_prefill(read, time.perf_counter() - started)
            except Exception as error:  # the chunks' sequences fail, the batch goes on
                log.exception("reading a prompt failed")
                self._fail([sequence for sequence, _ in plan.prefill], error)
                sampled = []
            for sequence, token in sampled:
                sequence.phase = Phase.DECODE
                self._accept(sequence, token)
        decoding = [s for s in plan.decode if s.phase is Phase.DECODE]
        if decoding:
            started = time.perf_counter()
            try:
                tokens = self._runner.decode(decoding)
                self._rates.record_step(time.perf_counter() - started)
            except Exception as error:  # the batch fails together: no way to tell whose
                log.exception("a decode step failed")
                self._fail(decoding, error)
                return
            for sequence, new in zip(decoding, tokens, strict=True):
                # Confirmed guesses past the reply's end (a stop token, a stop string) go.
                all(not self._accept(sequence, token) for token in new)
            self._stats.record_step(len(decoding), sum(map(len, tokens)), self._runner.last_drafts)

    def _accept(self, sequence: Sequence, token: int) -> bool:
        """Take a sampled token; True when it ended the reply."""
        sequence.generated.append(token)
        ended = sequence.output.push(token)
        if ended:
            self._end(sequence, None)
        return ended

    def _end(self, sequence: Sequence, reason: FinishReason | None) -> None:
        """A sequence leaves: its reply is finished and its state kept or freed."""
        assert self._runner is not None
        with self._condition:
            self._scheduler.finish(sequence)
            self._sequences.pop(sequence.job, None)
        self._runner.release(sequence)  # kept before the caller hears the reply is done
        if reason is None:  # a reply that ended by itself: its length teaches the estimate
            self._rates.record_reply(len(sequence.generated))
        sequence.output.close(reason)

    def _fail(self, sequences: list[Sequence], error: Exception) -> None:
        for sequence in sequences:
            with self._condition:
                self._scheduler.finish(sequence)
                self._sequences.pop(sequence.job, None)
            sequence.state = None  # possibly half-written: never kept
            sequence.job.emit(Failed(GenerationFailed(f"{type(error).__name__}: {error}")))
