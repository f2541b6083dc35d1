"""The engine's async API on the real transformers path with a tiny Qwen3."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from engine.config import EngineSettings
from engine.engine import Engine
from engine.errors import GenerationFailed, Overloaded, PromptTooLong
from engine.events import Finished, Queued, Started, TokenText
from tests.support.chat import ForwardCounter, collect, request, wait_until


async def test_stream_yields_started_then_text_then_finished(engine: Engine) -> None:
    events = await collect(engine, request("Hello there", max_new_tokens=10))
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished)
    assert all(isinstance(e, TokenText) for e in events[1:-1])
    finished = events[-1]
    streamed = "".join(e.text for e in events if isinstance(e, TokenText))
    assert streamed == finished.text
    stats = finished.stats
    assert stats.prompt_tokens == events[0].prompt_tokens > 5
    assert stats.generated_tokens == len(finished.token_ids) == 10  # random weights never stop
    assert finished.finish_reason == "length"
    assert stats.ttft_s > 0 and stats.total_s >= stats.ttft_s and stats.decode_tps > 0
    assert not stats.cache_hit
    assert engine.snapshot().queue_depth_max == 0  # an idle worker took it at once


async def test_generate_is_greedy_and_deterministic(engine_settings: EngineSettings) -> None:
    no_cache = engine_settings.model_copy(update={"cache_enabled": False})
    engine = Engine(no_cache)
    await engine.start()
    try:
        first = await engine.generate(request("Count to three", max_new_tokens=8))
        second = await engine.generate(request("Count to three", max_new_tokens=8))
    finally:
        await engine.close()
    assert first.token_ids == second.token_ids
    assert not second.stats.cache_hit


async def test_cancelling_the_consumer_stops_generation_at_the_next_token(engine: Engine) -> None:
    counter = ForwardCounter(engine.loaded.model)
    stream = engine.stream(request("Tell me a long story", max_new_tokens=3000))
    async with aclosing(stream):
        async for event in stream:
            if isinstance(event, TokenText):
                break
        at_cancel = counter.calls
    await wait_until(lambda: not engine.busy)
    assert counter.calls - at_cancel <= 2  # the step in flight, then it stops
    assert counter.calls < 3000
    counter.restore()
    after = await engine.generate(request("Still there?", max_new_tokens=4))
    assert after.stats.generated_tokens == 4


async def test_cancelling_the_task_stops_generation(engine: Engine) -> None:
    counter = ForwardCounter(engine.loaded.model)
    started = asyncio.Event()

    async def consume() -> None:
        async for event in engine.stream(request("Go on forever", max_new_tokens=3000)):
            if isinstance(event, TokenText):
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = counter.calls
    await wait_until(lambda: not engine.busy)
    assert counter.calls - at_cancel <= 2
    assert counter.calls < 3000


async def test_full_queue_refuses_at_once(engine_settings: EngineSettings) -> None:
    # One reply at a time, so the second waits in the queue.
    engine = Engine(engine_settings.model_copy(update={"queue_size": 1, "max_batch": 1}))
    await engine.start()
    long = request("first", max_new_tokens=3000)
    first = engine.stream(long)
    try:
        assert isinstance(await anext(first), Started)  # running, so the queue is empty again
        second = engine.stream(request("second", max_new_tokens=3000))
        assert (await anext(second)).ahead == 1  # type: ignore[union-attr]
        with pytest.raises(Overloaded):
            await collect(engine, request("third"))
        assert engine.snapshot().errors == {"overloaded": 1}
        await second.aclose()
    finally:
        await first.aclose()
        await engine.close()


async def test_a_request_is_refused_only_when_its_wait_would_be_too_long(
    engine_settings: EngineSettings,
) -> None:
    # One reply at a time; the queue may hold 256, so only the expected wait can refuse.
    patient = Engine(engine_settings.model_copy(update={"max_batch": 1}))
    hasty = Engine(engine_settings.model_copy(update={"max_batch": 1, "max_wait_s": 1e-6}))
    for engine in (patient, hasty):
        await engine.start()
        first = engine.stream(request("first", max_new_tokens=3000))
        try:
            assert isinstance(await anext(first), Started)
            if engine is patient:
                waiting = [engine.stream(request(f"q{n}", max_new_tokens=5)) for n in range(12)]
                places = [await anext(stream) for stream in waiting]
                assert [p.ahead for p in places] == list(range(1, 13))  # type: ignore[union-attr]
                waits = [p.wait_s for p in places]  # type: ignore[union-attr]
                assert all(wait > 0 for wait in waits)  # each told how long, roughly
                for stream in waiting:
                    await stream.aclose()
            else:
                with pytest.raises(Overloaded) as refused:
                    await collect(engine, request("second"))
                assert refused.value.wait_s is not None and refused.value.wait_s > 1e-6
        finally:
            await first.aclose()
            await engine.close()


async def test_queued_request_hears_its_position_move(engine_settings: EngineSettings) -> None:
    engine = Engine(engine_settings.model_copy(update={"queue_size": 4, "max_batch": 1}))
    await engine.start()
    running = engine.stream(request("one", max_new_tokens=40))
    try:
        assert isinstance(await anext(running), Started)
        waiting_b = engine.stream(request("two", max_new_tokens=5))
        assert (await anext(waiting_b)).ahead == 1  # type: ignore[union-attr]
        waiting_c = engine.stream(request("three", max_new_tokens=5))
        assert (await anext(waiting_c)).ahead == 2  # type: ignore[union-attr]
        await collect_rest(running)
        events_c = [event async for event in waiting_c]
        assert 1 in [e.ahead for e in events_c if isinstance(e, Queued)]  # moved up after "one"
        assert isinstance(events_c[-1], Finished)
        await collect_rest(waiting_b)
    finally:
        await engine.close()


async def collect_rest(stream: object) -> None:
    """Drain an async iterator."""
    async for _ in stream:  # type: ignore[attr-defined]
        pass


async def test_exception_in_one_generation_fails_only_that_request(engine: Engine) -> None:
    counter = ForwardCounter(engine.loaded.model, fail_on_call=3)
    with pytest.raises(GenerationFailed):
        await engine.generate(request("This one breaks", max_new_tokens=10))
    counter.restore()
    healthy = await engine.generate(request("This one works", max_new_tokens=5))
    assert healthy.stats.generated_tokens == 5
    assert engine.snapshot().errors == {"generation_failed": 1}


async def test_prompt_over_the_limit_is_refused(engine_settings: EngineSettings) -> None:
    engine = Engine(engine_settings.model_copy(update={"max_input_tokens": 20}))
    await engine.start()
    try:
        with pytest.raises(PromptTooLong) as caught:
            await engine.generate(request("word " * 50))
    finally:
        await engine.close()
    assert caught.value.tokens > 20 and caught.value.limit == 20


async def test_cancelled_replies_are_counted_for_admins(engine: Engine) -> None:
    stream = engine.stream(request("Never mind", max_new_tokens=3000))
    async with aclosing(stream):
        async for event in stream:
            if isinstance(event, TokenText):
                break
    await engine.generate(request("A full answer", max_new_tokens=3))
    snapshot = engine.snapshot()
    assert snapshot.errors == {"cancelled": 1}
    assert snapshot.requests == 2


async def test_ignore_stop_generates_exactly_max_new_tokens(engine: Engine) -> None:
    first = await engine.generate(request("hi", max_new_tokens=6))
    engine.loaded.stop_ids = frozenset({first.token_ids[0]})  # its first token now ends a turn
    stopped = await engine.generate(request("hi", max_new_tokens=5))
    forced = await engine.generate(request("hi", max_new_tokens=5, ignore_stop=True))
    assert stopped.stats.generated_tokens == 0 and stopped.finish_reason == "stop"
    assert forced.stats.generated_tokens == 5 and forced.finish_reason == "length"


async def test_a_conversation_is_rendered_once_for_counting_and_answering(engine: Engine) -> None:
    messages = request("Count me, then answer me").messages
    counted = engine.count_tokens(list(messages))
    assert engine.prepare(messages) is engine.prepare(list(messages))  # the same cached render
    finished = await engine.generate(request("Count me, then answer me"))
    assert finished.stats.prompt_tokens == counted
