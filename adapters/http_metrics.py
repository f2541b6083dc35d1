"""GET /metrics: the counters /stats shows, in Prometheus' text format (prometheus-client).

Read from the engine's snapshot and the service's request counts at each scrape, so /stats
and /metrics never disagree; nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from adapters.http_slot import ServiceSlot
    from bot.state.redis_link import SharedStateStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceCollector(Collector):
    """One scrape: a snapshot of the service, as metric families."""

    def __init__(self, slot: ServiceSlot) -> None:
        self._slot = slot

    def collect(self) -> Iterator[Metric]:
        """Every qwenbot_* metric, read now (none while the model loads)."""
        service = self._slot.service
        if service is None:
            return
        requests = CounterMetricFamily(
            "qwenbot_requests", "Requests by platform and outcome (answered, or why not)",
            labels=["platform", "outcome"],
        )  # fmt: skip
        for (platform, outcome), count in sorted(service.requests.snapshot().items()):
            requests.add_metric([platform, outcome], count)
        yield requests
        if not service.ready():
            return
        stats = service.snapshot()
        yield _counter("qwenbot_engine_errors", "Engine errors by kind", stats.errors, "kind")
        yield CounterMetricFamily("qwenbot_prompt_tokens", "Prompt tokens read by the model",
                                  value=stats.prompt_tokens)  # fmt: skip
        yield CounterMetricFamily("qwenbot_generated_tokens", "Tokens generated",
                                  value=stats.tokens_generated)  # fmt: skip
        yield CounterMetricFamily("qwenbot_cache_hits", "Replies served from the reply cache",
                                  value=stats.cache_hits)  # fmt: skip
        yield CounterMetricFamily("qwenbot_guessed_tokens", "Tokens guessed by prompt lookup "
                                  "(speculative decoding)", value=stats.drafted_tokens)  # fmt: skip
        yield CounterMetricFamily("qwenbot_confirmed_tokens", "Guessed tokens the model "
                                  "confirmed", value=stats.confirmed_tokens)  # fmt: skip
        yield CounterMetricFamily("qwenbot_kept_state_hits",
                                  "Replies that continued a conversation's kept state",
                                  value=stats.prefix_hits)  # fmt: skip
        yield _histogram("qwenbot_time_to_first_token_seconds", "Time to first token",
                         stats.ttft_histogram)  # fmt: skip
        yield _histogram("qwenbot_reply_seconds", "Whole reply time", stats.latency_histogram)
        for name, text, value in (
            ("qwenbot_decode_tokens_per_second", "Mean decode speed, recent replies",
             stats.mean_decode_tps),
            ("qwenbot_queue_depth", "Requests waiting now", stats.queue_depth),
            ("qwenbot_batch_size", "Sequences in the last decode step", stats.batch_size),
            ("qwenbot_batch_size_mean", "Mean decode batch, recent steps", stats.batch_mean),
            ("qwenbot_batch_size_max", "Largest decode batch, recent steps", stats.batch_max),
            ("qwenbot_tokens_per_step", "Tokens a sequence got per decode step (guesses "
             "confirmed add to 1)", stats.tokens_per_step),
            ("qwenbot_process_resident_memory_bytes", "Resident memory", stats.rss_bytes),
            ("qwenbot_process_cpu_percent", "CPU % since the last read, all cores",
             stats.cpu_percent),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, text, value=value)
        yield from _fleet(service.state_status(), stats.servers)


def _fleet(state: SharedStateStatus | None, servers: tuple[Any, ...]) -> Iterator[Metric]:
    """Shared state (STATE__REDIS_URL) and inference servers (backend remote: the engine's
    ServerStatus, which an adapter reaches only through the service), when used."""
    if state is not None:
        yield GaugeMetricFamily("qwenbot_shared_state_up", "Whether the shared state's Redis "
                                "answers (1) or not (0)", value=int(state.up))  # fmt: skip
    if not servers:
        return
    up = GaugeMetricFamily("qwenbot_inference_server_up", "Whether an inference server is in "
                           "use (1) or down (0)", labels=["url"])  # fmt: skip
    busy = GaugeMetricFamily("qwenbot_inference_server_in_flight", "Replies it is writing now",
                             labels=["url"])  # fmt: skip
    replies = CounterMetricFamily("qwenbot_inference_server_replies", "Replies it answered, "
                                  "or failed", labels=["url", "outcome"])  # fmt: skip
    for server in servers:
        up.add_metric([server.url], int(server.up))
        busy.add_metric([server.url], server.in_flight)
        replies.add_metric([server.url, "answered"], server.answered)
        replies.add_metric([server.url, "failed"], server.failed)
    yield from (up, busy, replies)


def _counter(name: str, text: str, values: dict[str, int], label: str) -> Metric:
    family = CounterMetricFamily(name, text, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


def _histogram(name: str, text: str, snapshot: Any) -> Metric:
    family = HistogramMetricFamily(name, text)
    bounds = [str(bound) for bound in snapshot.bounds] + ["+Inf"]
    family.add_metric([], list(zip(bounds, snapshot.cumulative, strict=True)), snapshot.total)
    return family


def metrics_text(registry: CollectorRegistry) -> bytes:
    """The exposition text of a registry."""
    return generate_latest(registry)


def service_registry(slot: ServiceSlot) -> CollectorRegistry:
    """A registry of this service's metrics alone (not the process-wide default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(slot))
    return registry
