"""Speculative decoding by prompt lookup: the guesses come from the conversation, and a
greedy reply is token for token the same with and without them, alone or in a batch."""

from __future__ import annotations

import asyncio

import pytest

from engine.config import EngineSettings
from engine.engine import Engine
from engine.events import Finished, GenerationRequest
from engine.serving.speculation import DraftState, Speculator
from tests.support.chat import request
from tests.support.smollm2 import smollm2_gguf

REPETITIVE = [
    "Repeat this list exactly: apples, pears, plums, apples, pears, plums, apples, pears.",
    "Copy the code: def add(a, b): return a + b\ndef sub(a, b): return a - b",
    "Hello there, how are you?",
    "Xin chào, bạn khỏe không? Xin chào, bạn khỏe không?",
]


def test_a_guess_is_what_followed_the_latest_earlier_occurrence_of_the_tail() -> None:
    state = DraftState()
    state.extend([1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7, 8, 2, 3])
    assert state.lookup(3) == [4, 6, 7]  # "8 2 3" is new; "2 3" last came before 4 6 7
    state.extend([4, 6])
    assert state.lookup(5) == [7, 8, 2, 3, 4]  # the longer tail "3 4 6" first
    state.extend([8])
    assert state.lookup(3) == []  # "3 8" and "2 3 8" never came before
    assert DraftState().lookup(4) == []


def test_guessing_backs_off_when_it_keeps_failing_and_grows_when_right() -> None:
    speculator = Speculator(max_guess=8, max_rows=16)
    state = DraftState(context=[], guess=4)
    speculator.record(state, proposed=4, accepted=4)
    assert state.guess == 6
    speculator.record(state, proposed=6, accepted=0)
    speculator.record(state, proposed=3, accepted=0)
    assert state.guess == 1 and state.resting == 3  # then three steps without guessing
    state.extend([5, 6, 7, 5, 6])
    rested = [speculator.drafts([(state, [], 10)])[0] for _ in range(4)]
    assert rested[:3] == [[], [], []] and rested[3] == [7]


async def replies(settings: EngineSettings, requests: list[GenerationRequest]) -> list[Finished]:
    """Each request alone, then all at once, on one fresh engine; both lists returned."""
    engine = Engine(settings)
    await engine.start()
    try:
        alone = [await engine.generate(r) for r in requests]
        together = await asyncio.gather(*(engine.generate(r) for r in requests))
        stats = engine.snapshot()
    finally:
        await engine.close()
    replies.stats = stats  # type: ignore[attr-defined]
    return [*alone, *together]


@pytest.mark.parametrize("quantization", ["int8", "int4"])
async def test_greedy_replies_are_identical_with_and_without_guesses_on_the_tiny_model(
    engine_settings: EngineSettings, quantization: str
) -> None:
    settings = engine_settings.model_copy(
        update={"cache_enabled": False, "prefix_cache_mb": 0, "quantization": quantization}
    )
    asked = [request(text, max_new_tokens=80, ignore_stop=True, owner=f"u{n}")
             for n, text in enumerate(REPETITIVE)]  # fmt: skip
    plain = await replies(settings.model_copy(update={"speculate_tokens": 0}), asked)
    guessed = await replies(settings.model_copy(update={"speculate_tokens": 8}), asked)
    stats = replies.stats  # type: ignore[attr-defined]
    assert [f.token_ids for f in guessed] == [f.token_ids for f in plain]
    assert stats.drafted_tokens > 0  # guesses ran (a random model's rarely come true)


@pytest.mark.parametrize("quantization", ["int8", "int4"])
async def test_verified_rows_give_exactly_one_by_one_decodings_logits(
    engine_settings: EngineSettings, quantization: str
) -> None:
    """The claim speculation rests on: a step over a token and the tokens after it, sharing
    one cache, gives each row the logits one-by-one decoding gives, bit for bit; rows after
    a wrong token are the only ones that differ."""
    import torch

    engine = Engine(engine_settings.model_copy(update={"quantization": quantization}))
    await engine.start()
    try:
        model = engine.loaded.model
        assert model.verifies
        prompt = torch.tensor(engine.prepare(request("Count: one two three").messages).ids)
        with torch.inference_mode():
            alone_cache = model.new_cache(256)
            model.read_prompts([(prompt, alone_cache)])
            tokens, alone = [7], []
            for _ in range(6):
                logits = model.decode(torch.tensor(tokens[-1:]), [alone_cache])[0]
                alone.append(logits)
                tokens.append(int(logits.argmax()))
            shared = model.new_cache(256)
            model.read_prompts([(prompt, shared)])
            base = shared.length
            rows = model.verify(torch.tensor(tokens[:6]), [shared] * 6,
                                [base + n for n in range(6)])  # fmt: skip
            wrong = [*tokens[:3], (tokens[3] + 1) % 100, *tokens[4:6]]
            spoiled = model.verify(torch.tensor(wrong), [shared] * 6, [base + n for n in range(6)])
    finally:
        await engine.close()
    assert all(torch.equal(rows[n], alone[n]) for n in range(6))
    assert all(torch.equal(spoiled[n], alone[n]) for n in range(3))
    assert not torch.equal(spoiled[4], alone[4])  # after the wrong token, another history


@pytest.mark.slow
async def test_greedy_replies_are_identical_with_and_without_guesses_on_smollm2(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = EngineSettings(model=str(smollm2_gguf()), cache_enabled=False, warmup=False,
                              cache_dir=tmp_path_factory.mktemp("responses"))  # fmt: skip
    paragraph = ("The river Seine flows through Paris. Its banks are lined with bookstalls, "
                 "and its bridges connect the Left Bank with the Right Bank.")  # fmt: skip
    asked = [
        request(f"Summarise in one sentence: {paragraph}", max_new_tokens=60, owner="a"),
        request(
            "Rewrite as a bulleted list: red, green, blue, yellow, purple",
            max_new_tokens=60,
            owner="b",
        ),
        request("Fix the bug: def square(x): return x + x", max_new_tokens=60, owner="c"),
        request("What is the capital of France?", max_new_tokens=40, owner="d"),
        # A stop string met inside a run of confirmed guesses ends the reply right there.
        request(
            "Repeat exactly: one, two, three, four, five, six",
            max_new_tokens=40,
            stop=("four",),
            owner="e",
        ),
    ]
    plain = await replies(settings.model_copy(update={"speculate_tokens": 0}), asked)
    guessed = await replies(settings, asked)
    stats = replies.stats  # type: ignore[attr-defined]
    assert [f.text for f in guessed] == [f.text for f in plain]
    assert [f.token_ids for f in guessed] == [f.token_ids for f in plain]
    assert "Paris" in guessed[3].text
    assert guessed[4].finish_reason == "stop" and "four" not in guessed[4].text
    assert stats.confirmed_tokens > 0


@pytest.mark.slow
async def test_a_chats_kept_state_after_confirmed_guesses_gives_the_same_next_turn(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A reply written with confirmed guesses (its cache holds rows of rejected ones past
    its end) is kept for the chat; the next turn continued from that state is the same as
    one read afresh without guesses."""
    from engine.events import ChatTurn

    folder = tmp_path_factory.mktemp("responses")
    kept = EngineSettings(model=str(smollm2_gguf()), cache_enabled=False, warmup=False,
                          cache_dir=folder, max_new_tokens=48)  # fmt: skip
    fresh = kept.model_copy(update={"speculate_tokens": 0, "prefix_cache_mb": 0})
    first = ChatTurn("user", "Rewrite as a numbered list: cats, dogs, birds, fish, horses")

    async def two_turns(settings: EngineSettings) -> tuple[Finished, Finished, int]:
        engine = Engine(settings)
        await engine.start()
        try:
            one = await engine.generate(GenerationRequest((first,), conversation="chat"))
            turns = (first, ChatTurn("assistant", one.as_generated),
                     ChatTurn("user", "Now the same list, reversed."))  # fmt: skip
            two = await engine.generate(GenerationRequest(turns, conversation="chat"))
            return one, two, engine.snapshot().confirmed_tokens
        finally:
            await engine.close()

    one, two, confirmed = await two_turns(kept)
    plain_one, plain_two, _ = await two_turns(fresh)
    assert confirmed > 0 and two.stats.reused_tokens > 0  # guesses, then the kept state
    assert (one.token_ids, two.token_ids) == (plain_one.token_ids, plain_two.token_ids)
