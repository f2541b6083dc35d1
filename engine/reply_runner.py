"""Run one reply on the worker thread: decode, detokenise, hide think blocks, time it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.bootstrap import LoadedModel
from engine.decode_loop import SamplingParams, decode_tokens
from engine.detokenizer import IncrementalDetokenizer
from engine.events import Finished, FinishReason, ReplyStats, Started, TokenText
from engine.think_filter import ThinkFilter


@dataclass(eq=False)
class Job:
    """A prepared request waiting for, or running on, the worker."""

    prompt_ids: list[int]
    params: SamplingParams
    starts_in_think: bool
    emit: Callable[[object], None]  # thread-safe hand-off to the waiting consumer
    submitted_at: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)


def run_reply(bundle: LoadedModel, job: Job) -> Finished:
    """Generate one reply, emitting Started, TokenText..., Finished through job.emit."""
    started_at = time.perf_counter()
    job.emit(Started(prompt_tokens=len(job.prompt_ids)))
    detokenizer = IncrementalDetokenizer(bundle.tokenizer)
    think = ThinkFilter(starts_inside=job.starts_in_think)
    visible: list[str] = []
    token_ids: list[int] = []
    first_at: float | None = None
    last_at = started_at
    finish: FinishReason = "length"

    def show(text: str) -> None:
        if text:
            visible.append(text)
            job.emit(TokenText(text))

    stop_ids = frozenset() if job.params.ignore_stop else bundle.stop_ids
    for token in decode_tokens(
        bundle.model,
        job.prompt_ids,
        job.params,
        stop_ids,
        job.cancelled.is_set,
        cache=bundle.kv_cache,
    ):
        last_at = time.perf_counter()
        if first_at is None:
            first_at = last_at
        if token in stop_ids:
            finish = "stop"
            break
        token_ids.append(token)
        show(think.push(detokenizer.push(token)))
    if job.cancelled.is_set() and finish != "stop":
        finish = "cancelled"
    show(think.push(detokenizer.flush()) + think.flush())
    generated = len(token_ids)
    if first_at is None:  # cancelled before the first token
        first_at = last_at
    decode_window = last_at - first_at
    stats = ReplyStats(
        prompt_tokens=len(job.prompt_ids),
        generated_tokens=generated,
        ttft_s=first_at - started_at,
        decode_tps=(generated - 1) / decode_window if generated > 1 and decode_window > 0 else 0.0,
        total_s=last_at - job.submitted_at,
        queue_wait_s=started_at - job.submitted_at,
        cache_hit=False,
    )
    finished = Finished("".join(visible), stats, finish, tuple(token_ids))
    job.emit(finished)
    return finished
