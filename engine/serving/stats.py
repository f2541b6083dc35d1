"""Aggregate engine statistics for /stats, safe to update from the worker thread."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import psutil

from engine.config import EffectiveConfig
from engine.events import ReplyStats
from engine.serving.histogram import Histogram, HistogramSnapshot
from engine.serving.prefix_cache import PrefixUsage

_WINDOW = 1000  # recent replies kept for percentiles


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class ServerStatus:
    """One inference server of a remote backend, as /stats and /metrics show it."""

    url: str
    up: bool
    in_flight: int
    answered: int
    failed: int
    down_for_s: float = 0.0


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of the counters at one moment."""

    requests: int
    errors: dict[str, int]
    cache_hits: int
    latency_p50_s: float
    latency_p95_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    mean_decode_tps: float
    tokens_generated: int
    queue_depth: int
    queue_depth_max: int
    uptime_s: float
    rss_bytes: int
    cpu_percent: float
    config: EffectiveConfig | None
    batch_size: int = 0  # sequences in the last decode step
    batch_mean: float = 0.0  # over recent decode steps
    batch_max: int = 0  # the largest of recent decode steps
    prefix_lookups: int = 0  # replies that looked for a kept conversation state
    prefix_hits: int = 0
    prefix_tokens_saved: int = 0  # prompt tokens not read again thanks to kept state
    kv_kept_bytes: int = 0  # memory of kept conversation states
    prompt_tokens: int = 0  # read by the model (kept state and cached replies excluded)
    ttft_histogram: HistogramSnapshot | None = None  # replies the model wrote (no cache hits)
    latency_histogram: HistogramSnapshot | None = None
    servers: tuple[ServerStatus, ...] = ()  # backend remote: its inference servers
    drafted_tokens: int = 0  # guessed by prompt lookup (speculative decoding)
    confirmed_tokens: int = 0  # of those, confirmed by the model
    tokens_per_step: float = 0.0  # tokens a sequence got per decode step (1 without guesses)

    @property
    def draft_acceptance(self) -> float:
        """Share of guessed tokens the model confirmed."""
        return self.confirmed_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def prefix_hit_rate(self) -> float:
        """Share of replies that continued from kept state."""
        return self.prefix_hits / self.prefix_lookups if self.prefix_lookups else 0.0

    @property
    def cache_hit_rate(self) -> float:
        """Share of requests answered from the cache."""
        return self.cache_hits / self.requests if self.requests else 0.0


@dataclass
class EngineStats:
    """Counters updated by the engine; read with snapshot()."""

    started_at: float = field(default_factory=time.monotonic)
    config: EffectiveConfig | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _requests: int = 0
    _cache_hits: int = 0
    _tokens: int = 0
    _errors: Counter[str] = field(default_factory=Counter)
    _latency: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    _ttft: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    _tps: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    _queue_depth: int = 0
    _queue_depth_max: int = 0
    _batches: deque[int] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    _batch_now: int = 0
    _prefix: PrefixUsage | None = None
    _prompt_tokens: int = 0
    _step_tokens: int = 0  # tokens decode steps gave, over all sequences
    _step_rows: int = 0  # sequence-steps (a sequence in a step counts once)
    _drafted: int = 0  # tokens guessed by prompt lookup
    _confirmed: int = 0  # of those, the ones the model confirmed
    _ttft_histogram: Histogram = field(default_factory=Histogram)
    _latency_histogram: Histogram = field(default_factory=Histogram)
    _process: psutil.Process = field(default_factory=psutil.Process, repr=False)

    def __post_init__(self) -> None:
        # psutil measures CPU % between calls; the first call only starts the clock.
        self._process.cpu_percent(interval=None)

    def record_reply(self, stats: ReplyStats) -> None:
        """Count one answered request."""
        with self._lock:
            self._requests += 1
            self._latency.append(stats.total_s)
            self._latency_histogram.observe(stats.total_s)
            if stats.cache_hit:
                self._cache_hits += 1
                return
            self._tokens += stats.generated_tokens
            self._prompt_tokens += stats.prompt_tokens - stats.reused_tokens
            self._ttft.append(stats.ttft_s)  # replies the model wrote, as /stats shows them
            self._ttft_histogram.observe(stats.ttft_s)
            if stats.generated_tokens > 1:
                self._tps.append(stats.decode_tps)

    def record_error(self, kind: str) -> None:
        """Count one failed or refused request by its error label."""
        with self._lock:
            self._requests += 1
            self._errors[kind] += 1

    def set_queue_depth(self, depth: int) -> None:
        """Track the number of waiting requests now and the most ever seen."""
        with self._lock:
            self._queue_depth = depth
            self._queue_depth_max = max(self._queue_depth_max, depth)

    def record_step(
        self, batch_size: int, tokens: int | None = None, drafts: tuple[int, int] = (0, 0)
    ) -> None:
        """Count one decode step of batch_size sequences, the tokens it gave them (more than
        one each where guesses were confirmed), and its guesses (made, confirmed)."""
        with self._lock:
            self._batches.append(batch_size)
            self._batch_now = batch_size
            self._step_tokens += batch_size if tokens is None else tokens
            self._step_rows += batch_size
            self._drafted += drafts[0]
            self._confirmed += drafts[1]

    def record_idle(self) -> None:
        """Nothing runs any more: the current batch is empty."""
        with self._lock:
            self._batch_now = 0

    def set_prefix_usage(self, usage: PrefixUsage) -> None:
        """The kept-state cache's counters as of now."""
        with self._lock:
            self._prefix = usage

    def snapshot(self) -> StatsSnapshot:
        """Copy the counters, with process RSS and CPU % read now."""
        with self._lock:
            latency, ttft, tps = list(self._latency), list(self._ttft), list(self._tps)
            batches, prefix, batch_now = list(self._batches), self._prefix, self._batch_now
            snapshot = StatsSnapshot(
                requests=self._requests,
                errors=dict(self._errors),
                cache_hits=self._cache_hits,
                latency_p50_s=percentile(latency, 50),
                latency_p95_s=percentile(latency, 95),
                ttft_p50_s=percentile(ttft, 50),
                ttft_p95_s=percentile(ttft, 95),
                mean_decode_tps=statistics.fmean(tps) if tps else 0.0,
                tokens_generated=self._tokens,
                queue_depth=self._queue_depth,
                queue_depth_max=self._queue_depth_max,
                uptime_s=time.monotonic() - self.started_at,
                rss_bytes=self._process.memory_info().rss,
                # CPU % since the previous /stats (or start-up), summed over cores.
                cpu_percent=self._process.cpu_percent(interval=None),
                config=self.config,
                batch_size=batch_now,
                batch_mean=statistics.fmean(batches) if batches else 0.0,
                batch_max=max(batches, default=0),
                prefix_lookups=prefix.lookups if prefix else 0,
                prefix_hits=prefix.hits if prefix else 0,
                prefix_tokens_saved=prefix.tokens_saved if prefix else 0,
                kv_kept_bytes=prefix.bytes_in_use if prefix else 0,
                prompt_tokens=self._prompt_tokens,
                ttft_histogram=self._ttft_histogram.snapshot(),
                latency_histogram=self._latency_histogram.snapshot(),
                drafted_tokens=self._drafted,
                confirmed_tokens=self._confirmed,
                tokens_per_step=self._step_tokens / self._step_rows if self._step_rows else 0.0,
            )
        return snapshot
