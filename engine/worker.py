"""The one thread that owns the model: it loads it, then runs queued replies in order."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from engine.bootstrap import LoadedModel
from engine.errors import EngineError, GenerationFailed, Overloaded
from engine.events import Queued
from engine.reply_runner import Job, run_reply
from engine.stats import EngineStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failed:
    """Worker-to-consumer event: this request failed with a typed error."""

    error: EngineError


class Worker:
    """Admission-controlled FIFO in front of a single model-owning thread."""

    def __init__(self, capacity: int, stats: EngineStats) -> None:
        self._capacity = capacity
        self._stats = stats
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._closed = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._bundle: LoadedModel | None = None

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
        """A job is running or waiting."""
        with self._condition:
            return self._running is not None or bool(self._pending)

    def submit(self, job: Job) -> int:
        """Queue a job; returns how many run before it. Raises Overloaded when full."""
        with self._condition:
            if self._closed:
                raise GenerationFailed("the engine is shutting down")
            if len(self._pending) >= self._capacity:
                raise Overloaded(len(self._pending))
            ahead = len(self._pending) + (1 if self._running is not None else 0)
            self._pending.append(job)
            self._stats.set_queue_depth(self._waiting())
            self._condition.notify()
        return ahead

    def withdraw(self, job: Job) -> None:
        """Cancel a job: dropped if still queued, stopped at the next token if running."""
        job.cancelled.set()
        with self._condition:
            if job in self._pending:
                self._pending.remove(job)
                self._announce_positions()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, cancel everything queued or running, and wait for the thread."""
        with self._condition:
            self._closed = True
            for job in self._pending:
                job.cancelled.set()
                job.emit(Failed(GenerationFailed("the engine is shutting down")))
            self._pending.clear()
            if self._running is not None:
                self._running.cancelled.set()
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _waiting(self) -> int:
        """Jobs that must wait: an idle worker takes the first pending one at once."""
        return max(0, len(self._pending) - (0 if self._running is not None else 1))

    def _announce_positions(self) -> None:
        """Tell every waiting job its new place in line (caller holds the lock)."""
        self._stats.set_queue_depth(self._waiting())
        busy = 1 if self._running is not None else 0
        for index, waiting in enumerate(self._pending):
            waiting.emit(Queued(ahead=index + busy))

    def _next_job(self) -> Job | None:
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            job = self._pending.popleft()
            self._running = job
            self._announce_positions()
            return job

    def _run(self, load: Callable[[], LoadedModel], ready: Future[LoadedModel]) -> None:
        try:
            self._bundle = load()
        except BaseException as error:  # noqa: BLE001  every load failure goes to the caller
            ready.set_exception(error)
            return
        ready.set_result(self._bundle)
        while (job := self._next_job()) is not None:
            try:
                if not job.cancelled.is_set():
                    run_reply(self._bundle, job)
            except Exception as error:  # one failed reply must not kill the worker
                log.exception("generation failed")
                job.emit(Failed(GenerationFailed(f"{type(error).__name__}: {error}")))
            finally:
                with self._condition:
                    self._running = None
        log.debug("engine worker stopped")
