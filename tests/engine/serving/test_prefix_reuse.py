"""Kept conversation state on the tiny Qwen3: a chat's next turn reads only its new tokens,
an edited history or a reset reads more, and the memory budget evicts the oldest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.config import EngineSettings
from engine.engine import Engine
from engine.events import ChatTurn, Finished, GenerationRequest
from engine.native.kv_cache import KVCache
from engine.serving.prefix_cache import MIN_MATCH, PrefixCache

SYSTEM = ChatTurn("system", "You are a helpful assistant in a test. Answer briefly and kindly.")


def turn(history: tuple[ChatTurn, ...], text: str, chat: str = "chat1") -> GenerationRequest:
    """The next request of a conversation, as the chat service builds it."""
    messages = (SYSTEM, *history, ChatTurn("user", text))
    return GenerationRequest(messages, max_new_tokens=10, owner="u1", conversation=chat)


async def conversation(settings: EngineSettings, second_user: str) -> tuple[Finished, Finished]:
    """Two turns of one chat; the second after the first's answer."""
    engine = Engine(settings)
    await engine.start()
    try:
        first = await engine.generate(turn((), "Hello, who are you?"))
        history = (ChatTurn("user", "Hello, who are you?"), ChatTurn("assistant", first.text))
        second = await engine.generate(turn(history, second_user))
    finally:
        await engine.close()
    return first, second


@pytest.fixture
def reuse_settings(engine_settings: EngineSettings) -> EngineSettings:
    """Kept state on, reply cache off."""
    return engine_settings.model_copy(update={"cache_enabled": False, "prefix_cache_mb": 64})


async def test_the_next_turn_continues_from_the_kept_state(
    reuse_settings: EngineSettings,
) -> None:
    first, second = await conversation(reuse_settings, "And what can you do?")
    assert first.stats.reused_tokens == 0
    # Everything up to the previous answer's header is read from the kept state.
    assert second.stats.reused_tokens >= first.stats.prompt_tokens - 5
    fresh = reuse_settings.model_copy(update={"prefix_cache_mb": 0})
    _, recomputed = await conversation(fresh, "And what can you do?")
    assert recomputed.stats.reused_tokens == 0
    assert second.token_ids == recomputed.token_ids  # the same reply, fewer tokens read


async def test_an_edited_history_reuses_only_what_still_matches(
    reuse_settings: EngineSettings,
) -> None:
    engine = Engine(reuse_settings)
    await engine.start()
    try:
        first = await engine.generate(turn((), "Hello, who are you?"))
        edited = (ChatTurn("user", "Hi! Who is this?"), ChatTurn("assistant", first.text))
        second = await engine.generate(turn(edited, "And what can you do?"))
        engine.forget("chat1")  # /reset
        third = await engine.generate(turn((), "Hello, who are you?"))
        usage = engine.snapshot()
    finally:
        await engine.close()
    # Only the system prompt is shared with the kept state; after the reset, nothing.
    assert 0 < second.stats.reused_tokens < first.stats.prompt_tokens - 5
    assert third.stats.reused_tokens == 0
    assert usage.prefix_lookups == 3 and usage.prefix_hits == 1
    assert usage.prefix_tokens_saved == second.stats.reused_tokens


async def test_another_chat_shares_the_system_prompt_by_copy(
    reuse_settings: EngineSettings,
) -> None:
    engine = Engine(reuse_settings)
    await engine.start()
    try:
        await engine.generate(turn((), "Hello, who are you?", chat="a"))
        other = await engine.generate(turn((), "What is two plus two?", chat="b"))
        again = await engine.generate(turn((), "Hello, who are you?", chat="a"))
    finally:
        await engine.close()
    assert other.stats.reused_tokens >= MIN_MATCH  # the shared system prompt
    assert again.stats.reused_tokens > other.stats.reused_tokens  # chat a's state survived


def cache_of(tokens: int) -> KVCache:
    """A filled cache of a small shape."""
    cache = KVCache(layers=2, kv_heads=2, head_dim=8, dtype=torch.float32, max_tokens=4096)
    cache.reserve(tokens)
    cache.length = tokens
    return cache


def test_the_budget_evicts_the_least_recently_used_state() -> None:
    one = cache_of(40).nbytes
    kept = PrefixCache(budget_bytes=2 * one)
    starts = {"a": 0, "b": 100, "c": 200}
    ids = {name: list(range(start, start + 40)) for name, start in starts.items()}
    kept.keep(ids["a"], cache_of(40), "a")
    kept.keep(ids["b"], cache_of(40), "b")
    assert kept.take([*ids["a"], 999], "z") is not None  # a is used (copied): b is now oldest
    kept.keep(ids["c"], cache_of(40), "c")
    usage = kept.usage()
    assert usage.entries == 2 and usage.bytes_in_use <= 2 * one
    assert kept.take([*ids["b"], 999], "b") is None  # evicted
    found = kept.take([*ids["c"], 999], "c")
    assert found is not None and found[1] == 40


def test_a_state_larger_than_the_budget_is_not_kept() -> None:
    kept = PrefixCache(budget_bytes=cache_of(40).nbytes - 1)
    kept.keep(list(range(40)), cache_of(40), "a")
    assert kept.usage().entries == 0


def test_earlier_answers_keep_the_empty_think_block_they_followed(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from engine.text.prompt import render_chat

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = render_chat(tokenizer, (SYSTEM, ChatTurn("user", "Hi")), enable_thinking=False)
    history = (SYSTEM, ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello! How can I help?"))
    second = render_chat(tokenizer, (*history, ChatTurn("user", "Thanks")), enable_thinking=False)
    # The next prompt begins with everything the model read and wrote on the first turn.
    assert second.startswith(first + "Hello! How can I help?<|im_end|>")
    assert second.count("<think>\n\n</think>\n\n") == 2
    thinking = render_chat(tokenizer, (*history, ChatTurn("user", "Thanks")), enable_thinking=True)
    assert "<think>" not in thinking  # thinking on: the template's own rendering
