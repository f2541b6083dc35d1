"""On the real SmolLM2-135M-Instruct: a batch of eight and kept conversation state leave every
greedy answer exactly as it is alone and recomputed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.config import EngineSettings
from engine.engine import Engine
from engine.events import ChatTurn, Finished, GenerationRequest
from tests.engine.test_batching import PROMPTS
from tests.support.smollm2 import smollm2_gguf

SYSTEM = ChatTurn("system", "You are a helpful assistant. Answer in one or two sentences.")


def ask(text: str, history: tuple[ChatTurn, ...] = (), chat: str = "c") -> GenerationRequest:
    """A chat turn as the chat service sends it."""
    messages = (SYSTEM, *history, ChatTurn("user", text))
    return GenerationRequest(messages, max_new_tokens=24, owner=chat, conversation=chat)


def settings(tmp_path: Path, **changes: object) -> EngineSettings:
    """SmolLM2 on the default CPU configuration, no reply cache."""
    base = EngineSettings(model=str(smollm2_gguf()), cache_dir=tmp_path, cache_enabled=False)
    return base.model_copy(update=changes)


async def test_eight_at_once_answer_as_each_alone(tmp_path: Path) -> None:
    engine = Engine(settings(tmp_path, prefix_cache_mb=0))
    await engine.start()
    try:
        requests = [ask(text, chat=f"c{i}") for i, text in enumerate(PROMPTS)]
        together = await asyncio.gather(*(engine.generate(r) for r in requests))
        alone = [await engine.generate(r) for r in requests]
    finally:
        await engine.close()
    assert [f.token_ids for f in together] == [f.token_ids for f in alone]
    assert "Paris" in together[1].text


async def second_turn(engine_settings: EngineSettings) -> Finished:
    engine = Engine(engine_settings)
    await engine.start()
    try:
        first = await engine.generate(ask("What is the capital of France?"))
        history = (
            ChatTurn("user", "What is the capital of France?"),
            ChatTurn("assistant", first.text),
        )
        return await engine.generate(ask("And of Italy?", history))
    finally:
        await engine.close()


async def test_kept_state_answers_as_a_recomputed_prompt(tmp_path: Path) -> None:
    kept = await second_turn(settings(tmp_path))
    recomputed = await second_turn(settings(tmp_path, prefix_cache_mb=0))
    assert kept.stats.reused_tokens > 20 and recomputed.stats.reused_tokens == 0
    assert kept.token_ids == recomputed.token_ids
