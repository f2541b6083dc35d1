"""Every text a user sees that is not the model's: footers, /stats, errors, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine import EngineError, PromptTooLong, ReplyStats, ServerStatus, StatsSnapshot

if TYPE_CHECKING:
    from bot.state.redis_link import SharedStateStatus

NOT_ALLOWED = "Sorry, this bot is private."
EMPTY_REPLY = "(The model gave an empty answer. Try rephrasing, or send /reset.)"
EMPTY_MESSAGE = "Send me a question in text and I will answer."
ADMIN_ONLY = "Sorry, /stats is for the bot's admins."
HISTORY_CLEARED = "Done: I forgot our conversation in this chat."
RESTARTED = (
    "Sorry, I was restarted and lost track of this message. "
    "Please send it again if you still need an answer."
)


def footer(stats: ReplyStats) -> str:
    """The speed line under a reply, e.g. `⚡ 0.21 s to first token · 38.4 tok/s · 96 tokens`."""
    if stats.cache_hit:
        return f"⚡ cached · {stats.total_s * 1000:.0f} ms"
    parts = [f"⚡ {stats.ttft_s:.2f} s to first token"]
    if stats.decode_tps > 0:
        parts.append(f"{stats.decode_tps:.1f} tok/s")
    parts.append(f"{stats.generated_tokens} tokens")
    if stats.queue_wait_s >= 0.5:
        parts.append(f"queued {stats.queue_wait_s:.1f} s")
    return " · ".join(parts)


def queued(ahead: int, wait_s: float) -> str:
    """Where a waiting reply stands, e.g. `⏳ queued, 3 ahead · about 20 s`."""
    text = f"⏳ queued, {ahead} ahead"
    if wait_s >= 1:
        text += f" · about {_rough_duration(wait_s)}"
    return text


def _rough_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds / 5) * 5)} s" if seconds >= 10 else f"{round(seconds)} s"
    return f"{round(seconds / 60)} min"


def slow_down(wait_s: float) -> str:
    """The rate-limit reply."""
    return f"You're sending messages quickly — please wait {max(1, round(wait_s))} s and try again."


def reading(tokens: int) -> str:
    """Shown while a long message is read, before the answer starts."""
    return f"📖 reading your text ({tokens:,} tokens)…"


def input_too_long(tokens: int, limit: int, characters: int) -> str:
    """The reply to a message over the input limit (never silently truncated): how long it
    is and how long it may be, in characters (at this text's characters per token) too."""
    allowed = int(limit * characters / max(tokens, 1))
    return (
        f"Your message is too long for me: {tokens:,} tokens (about {characters:,} characters), "
        f"and I read at most {limit:,} tokens (about {allowed:,} characters of text like "
        "this). Please shorten it or send it in parts."
    )


def error_text(error: EngineError) -> str:
    """The one place engine errors become friendly text; no internals, no tracebacks."""
    if isinstance(error, PromptTooLong):
        return (
            f"This conversation is too long for me ({error.tokens} tokens, limit {error.limit}). "
            "Send /reset to start fresh."
        )
    return {
        "overloaded": (
            "So many people are asking right now that yours would wait too long. "
            "Please try again in a few minutes."
        ),
        "too_many_queued": "I'm still on your earlier messages. Please wait for those answers.",
        "not_ready": "I'm still starting up. Please try again in a moment.",
        "remote_unavailable": "My model server is not answering right now. "
        "Please try again in a minute.",
        "generation_failed": "Sorry, something went wrong while I was answering. Please try again.",
    }.get(error.kind, "Sorry, something went wrong. Please try again.")


def server_line(server: ServerStatus) -> str:
    """An inference server in /stats, e.g. `Server http://gpu:8000/v1: up · 2 in flight`."""
    state = "up" if server.up else f"DOWN for {server.down_for_s:.0f} s"
    return (f"Server {server.url}: {state} · {server.in_flight} in flight · "
            f"{server.answered} answered · {server.failed} failed")  # fmt: skip


def shared_state_line(state: SharedStateStatus) -> str:
    """Where the shared state is, in /stats; what a Redis outage means for the chats."""
    if state.up:
        return f"Shared state: Redis at {state.where} · up"
    return (f"Shared state: Redis at {state.where} · DOWN for {state.down_for_s:.0f} s: "
            "answering without shared history or reply cache, rate limits per process")  # fmt: skip


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def stats_text(snapshot: StatsSnapshot, extra: Sequence[str] = ()) -> str:
    """The admin /stats report (`extra`: lines from outside the engine, e.g. Redis)."""
    errors = ", ".join(f"{kind} {n}" for kind, n in sorted(snapshot.errors.items())) or "none"
    lines = ["📊 qwenbot stats"]
    if snapshot.config is not None:
        lines.append(snapshot.config.summary())
    lines += [
        f"Uptime {_duration(snapshot.uptime_s)} · RSS {snapshot.rss_bytes / 2**20:.0f} MB · "
        f"CPU {snapshot.cpu_percent:.0f} %",
        f"Requests {snapshot.requests} · errors: {errors}",
        f"Cache hits {snapshot.cache_hits} ({snapshot.cache_hit_rate:.0%})",
        f"Latency p50 {snapshot.latency_p50_s:.2f} s · p95 {snapshot.latency_p95_s:.2f} s",
        f"First token p50 {snapshot.ttft_p50_s:.2f} s · p95 {snapshot.ttft_p95_s:.2f} s",
        f"Decode {snapshot.mean_decode_tps:.1f} tok/s mean · "
        f"{snapshot.tokens_generated} tokens generated",
        f"Queue {snapshot.queue_depth} now · {snapshot.queue_depth_max} max",
        f"Batch {snapshot.batch_size} now · {snapshot.batch_mean:.1f} mean",
        f"Kept chats: hit rate {snapshot.prefix_hit_rate:.0%} · "
        f"{snapshot.prefix_tokens_saved} prompt tokens saved · "
        f"KV memory {snapshot.kv_kept_bytes / 2**20:.0f} MB",
    ]
    if snapshot.drafted_tokens:
        lines.append(
            f"Speculation: {snapshot.draft_acceptance:.0%} of {snapshot.drafted_tokens:,} guessed "
            f"tokens confirmed · {snapshot.tokens_per_step:.2f} tokens per sequence per step"
        )
    if snapshot.config is not None and snapshot.config.fallbacks:
        lines += [f"Fallback: {line}" for line in snapshot.config.fallbacks]
    lines += [server_line(server) for server in snapshot.servers]
    lines += extra
    return "\n".join(lines)
