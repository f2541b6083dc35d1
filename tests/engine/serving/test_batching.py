"""Continuous batching on the tiny Qwen3: batched replies equal solo ones, joins, leaves,
cancellation of one of many, and a queue that is fair between users."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from engine.config import EngineSettings
from engine.engine import Engine
from engine.errors import TooManyQueued
from engine.events import Finished, GenerationRequest, Queued, Started, TokenText
from tests.support.chat import request, wait_until

PROMPTS = [
    "Hello there, how are you?",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Xin chào, bạn khỏe không?",
    "List three prime numbers.",
    "Why is the sky blue?",
    "Tell me a joke about cats.",
    "Translate 'good morning' into German.",
]


@pytest.fixture
def batch_settings(engine_settings: EngineSettings) -> EngineSettings:
    """No reply cache and no kept state: every reply is computed."""
    return engine_settings.model_copy(
        update={"cache_enabled": False, "prefix_cache_mb": 0, "max_batch": 8, "queue_size": 16}
    )


async def replies(settings: EngineSettings, requests: list[GenerationRequest]) -> list[Finished]:
    """All requests sent at once to a fresh engine."""
    engine = Engine(settings)
    await engine.start()
    try:
        return list(await asyncio.gather(*(engine.generate(r) for r in requests)))
    finally:
        await engine.close()


async def test_a_batch_of_eight_answers_exactly_as_each_alone(
    batch_settings: EngineSettings,
) -> None:
    requests = [request(text, max_new_tokens=12, owner=f"u{i}") for i, text in enumerate(PROMPTS)]
    engine = Engine(batch_settings)
    await engine.start()
    try:
        together = await asyncio.gather(*(engine.generate(r) for r in requests))
        assert engine.snapshot().batch_mean > 4  # they really decoded together
        alone = [await engine.generate(r) for r in requests]
        await wait_until(lambda: engine.snapshot().batch_size == 0)  # idle again
    finally:
        await engine.close()
    assert [f.token_ids for f in together] == [f.token_ids for f in alone]
    assert all(f.stats.generated_tokens == 12 for f in together)


async def test_a_request_joins_mid_decode_and_leaves_first(batch_settings: EngineSettings) -> None:
    long, short = request(PROMPTS[0], max_new_tokens=60), request(PROMPTS[1], max_new_tokens=4)
    solo_long, solo_short = await replies(batch_settings, [long]) + await replies(
        batch_settings, [short]
    )
    engine = Engine(batch_settings)
    await engine.start()
    order: list[str] = []
    try:
        first = engine.stream(long)
        seen = 0
        async for event in first:  # the long reply is decoding...
            if isinstance(event, TokenText):
                seen += 1
                if seen == 3:
                    break
        short_reply = await engine.generate(short)  # ...when the short one joins
        order.append("short")
        rest = [event async for event in first]
        order.append("long")
        long_reply = rest[-1]
    finally:
        await engine.close()
    assert order == ["short", "long"]  # it left the batch the moment it was done
    assert isinstance(long_reply, Finished)
    assert short_reply.token_ids == solo_short.token_ids
    assert long_reply.token_ids == solo_long.token_ids


async def test_cancelling_one_of_many_leaves_the_others_untouched(
    batch_settings: EngineSettings,
) -> None:
    keep = [request(text, max_new_tokens=20, owner=f"u{i}") for i, text in enumerate(PROMPTS[:3])]
    solo = await replies(batch_settings.model_copy(update={"max_batch": 1}), keep)
    engine = Engine(batch_settings)
    await engine.start()
    try:
        doomed = engine.stream(request(PROMPTS[5], max_new_tokens=3000, owner="x"))
        tasks = [asyncio.create_task(engine.generate(r)) for r in keep]
        async with aclosing(doomed):
            async for event in doomed:
                if isinstance(event, TokenText):
                    break  # the consumer leaves: the request is withdrawn
        survivors = await asyncio.gather(*tasks)
        await wait_until(lambda: not engine.busy)
    finally:
        await engine.close()
    assert [f.token_ids for f in survivors] == [f.token_ids for f in solo]
    assert engine.snapshot().errors.get("cancelled") == 1


async def test_one_user_flooding_waits_behind_other_users(batch_settings: EngineSettings) -> None:
    settings = batch_settings.model_copy(update={"max_batch": 1, "max_queued_per_user": 2})
    engine = Engine(settings)
    await engine.start()
    finished_order: list[str] = []

    async def ask(name: str, owner: str, tokens: int = 6) -> list[object]:
        events = []
        async for event in engine.stream(request(name, max_new_tokens=tokens, owner=owner)):
            events.append(event)
        finished_order.append(name)
        return events

    try:
        running = engine.stream(request("busy", max_new_tokens=3000, owner="flooder"))
        assert isinstance(await anext(running), Started)
        flood = [asyncio.create_task(ask(f"flood{i}", "flooder")) for i in range(2)]
        await wait_until(lambda: engine.snapshot().queue_depth == 2)
        with pytest.raises(TooManyQueued):
            await engine.generate(request("flood2", owner="flooder"))
        other = asyncio.create_task(ask("other", "someone else"))
        await wait_until(lambda: engine.snapshot().queue_depth == 3)
        await running.aclose()  # the running reply is stopped: the queue moves
        other_events, *_ = await asyncio.gather(other, *flood)
    finally:
        await engine.close()
    # The other user's request went ahead of the flooder's queue: told 1 ahead, then first.
    assert 1 in [event.ahead for event in other_events if isinstance(event, Queued)]
    assert finished_order == ["other", "flood0", "flood1"]
    assert engine.snapshot().errors == {"too_many_queued": 1, "cancelled": 1}
