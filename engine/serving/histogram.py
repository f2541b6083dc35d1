"""Cumulative histograms of reply timings, in the shape Prometheus scrapes."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

# Seconds: from a cached reply (milliseconds) to a long answer on a crowded CPU (minutes).
TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class HistogramSnapshot:
    """Counts of observations at or below each bound (the last, +Inf, is all of them)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then +Inf
    total: float  # the sum of the observations

    @property
    def count(self) -> int:
        """How many observations."""
        return self.cumulative[-1]


class Histogram:
    """Observations counted into fixed buckets; not thread-safe (EngineStats locks it)."""

    def __init__(self, bounds: tuple[float, ...] = TIME_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self._total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        """The cumulative counts as of now."""
        running, cumulative = 0, []
        for count in self._counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(self._bounds, tuple(cumulative), self._total)
