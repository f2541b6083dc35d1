"""The admin /stats report, in the admin's language."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.i18n import Translator
from engine import ServerStatus, StatsSnapshot

if TYPE_CHECKING:
    from bot.state.redis_link import SharedStateStatus


def server_line(t: Translator, server: ServerStatus) -> str:
    """An inference server in /stats, e.g. `Server http://gpu:8000/v1: up · 2 in flight`."""
    if server.up:
        state = t.gettext("up")
    else:
        state = t.gettext("DOWN for {seconds} s").format(seconds=round(server.down_for_s))
    return t.gettext(
        "Server {url}: {state} · {in_flight} in flight · {answered} answered · {failed} failed"
    ).format(
        url=server.url,
        state=state,
        in_flight=server.in_flight,
        answered=t.number(server.answered),
        failed=t.number(server.failed),
    )


def shared_state_line(t: Translator, state: SharedStateStatus) -> str:
    """Where the shared state is, in /stats; what a Redis outage means for the chats."""
    if state.up:
        return t.gettext("Shared state: Redis at {where} · up").format(where=state.where)
    return t.gettext(
        "Shared state: Redis at {where} · DOWN for {seconds} s: answering without shared "
        "history or reply cache, rate limits per process"
    ).format(where=state.where, seconds=round(state.down_for_s))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def stats_text(t: Translator, snapshot: StatsSnapshot, extra: Sequence[str] = ()) -> str:
    """The admin /stats report (`extra`: lines from outside the engine, e.g. Redis)."""
    n = t.number
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(snapshot.errors.items()))
    lines = [t.gettext("📊 qwenbot stats")]
    if snapshot.config is not None:
        lines.append(snapshot.config.summary())  # settings' own words, as in .env
    lines += [
        t.gettext("Uptime {uptime} · RSS {rss} MB · CPU {cpu} %").format(
            uptime=_duration(snapshot.uptime_s),
            rss=n(snapshot.rss_bytes / 2**20),
            cpu=n(snapshot.cpu_percent),
        ),
        t.gettext("Requests {requests} · errors: {errors}").format(
            requests=n(snapshot.requests), errors=errors or t.gettext("none")
        ),
        t.gettext("Cache hits {hits} ({rate} %)").format(
            hits=n(snapshot.cache_hits), rate=n(snapshot.cache_hit_rate * 100)
        ),
        t.gettext("Latency p50 {p50} s · p95 {p95} s").format(
            p50=n(snapshot.latency_p50_s, 2), p95=n(snapshot.latency_p95_s, 2)
        ),
        t.gettext("First token p50 {p50} s · p95 {p95} s").format(
            p50=n(snapshot.ttft_p50_s, 2), p95=n(snapshot.ttft_p95_s, 2)
        ),
        t.gettext("Decode {rate} tok/s mean · {tokens} tokens generated").format(
            rate=n(snapshot.mean_decode_tps, 1), tokens=n(snapshot.tokens_generated)
        ),
        t.gettext("Queue {now} now · {most} max").format(
            now=snapshot.queue_depth, most=snapshot.queue_depth_max
        ),
        t.gettext("Batch {now} now · {mean} mean").format(
            now=snapshot.batch_size, mean=n(snapshot.batch_mean, 1)
        ),
        t.gettext(
            "Kept chats: hit rate {rate} % · {saved} prompt tokens saved · KV memory {kv} MB"
        ).format(
            rate=n(snapshot.prefix_hit_rate * 100),
            saved=n(snapshot.prefix_tokens_saved),
            kv=n(snapshot.kv_kept_bytes / 2**20),
        ),
    ]
    if snapshot.drafted_tokens:
        lines.append(
            t.gettext(
                "Speculation: {rate} % of {guessed} guessed tokens confirmed · "
                "{per_step} tokens per sequence per step"
            ).format(
                rate=n(snapshot.draft_acceptance * 100),
                guessed=n(snapshot.drafted_tokens),
                per_step=n(snapshot.tokens_per_step, 2),
            )
        )
    if snapshot.config is not None and snapshot.config.fallbacks:
        fallback = t.gettext("Fallback: {line}")
        lines += [fallback.format(line=line) for line in snapshot.config.fallbacks]
    lines += [server_line(t, server) for server in snapshot.servers]
    lines += extra
    return "\n".join(lines)
