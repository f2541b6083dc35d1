"""Loading stages as an operator sees them: a label on the progress bar while a stage runs,
then one INFO line with its duration (`loaded weights (int8, native decoder) in 2.1 s`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]  # (stage, fraction done 0..1)


def no_progress(stage: str, fraction: float) -> None:
    """Default progress sink: nothing to show."""


class Stage:
    """One stage under way: what its log line will say, and its share of the progress bar."""

    def __init__(self, progress: ProgressCallback, label: str, span: tuple[float, float]) -> None:
        self.done = label  # the log line once the stage ends; refined as the stage learns more
        self._progress = progress
        self._label = label
        self._start, self._end = span

    def advance(self, fraction: float) -> None:
        """Report that `fraction` (0..1) of this stage is done."""
        self._progress(self._label, self._start + (self._end - self._start) * fraction)


class Stages:
    """Runs the loading stages one after another, reporting each."""

    def __init__(self, progress: ProgressCallback) -> None:
        self._progress = progress

    @contextmanager
    def stage(self, label: str, span: tuple[float, float]) -> Iterator[Stage]:
        """A stage shown as `label` over the progress bar's span (fractions 0..1); logged
        with its duration when it ends (not when it fails: its error says that)."""
        stage = Stage(self._progress, label, span)
        stage.advance(0.0)
        started = time.perf_counter()
        yield stage
        log.info("%s in %.1f s", stage.done, time.perf_counter() - started)

    def ready(self) -> None:
        """The last report: the model is ready."""
        self._progress("Ready", 1.0)
