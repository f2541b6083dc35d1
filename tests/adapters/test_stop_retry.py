"""Stop and Retry under answers, for the asker only: Telegram (and /stop under drafts), Discord."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import formatting
from bot.history import HistoryStore
from bot.i18n import translator
from engine.config import EngineSettings
from engine.engine import Engine
from engine.events import Finished
from tests.adapters.conftest import StartBot
from tests.adapters.discord_fixtures import StartDiscord
from tests.support.fake_discord import ADMIN_USER_ID, BOT_ID, CHANNEL_ID, EPHEMERAL, FakeDiscord
from tests.support.fake_telegram import Call, FakeBotAPI

GROUP = -100123
MENTION = [{"type": "mention", "offset": 0, "length": 14}]
EN = translator("en")


def with_button(api: FakeBotAPI, chat_id: int, label: str) -> list[Call]:
    """Messages sent or edited in a chat that carry a button labelled `label`."""
    calls = api.sent("sendMessage", chat_id) + api.sent("editMessageText", chat_id)
    return [c for c in calls if label in str(c.get("reply_markup", ""))]


def button_data(call: Call) -> str:
    """The callback_data of the one button under a sent or edited message."""
    markup = call["reply_markup"]
    return str(markup["inline_keyboard"][0][0]["callback_data"])


def callback_answers(api: FakeBotAPI) -> list[str]:
    return [str(c.get("text", "")) for c in api.sent("answerCallbackQuery")]


async def slow_engine(engine_settings: EngineSettings) -> Engine:
    """An engine whose answers run long enough to be stopped midway."""
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    return slow


async def test_stop_cancels_the_generation_and_keeps_what_was_written(
    start_bot: StartBot, fake_api: FakeBotAPI, engine_settings: EngineSettings
) -> None:
    slow = await slow_engine(engine_settings)
    try:
        await start_bot(use_engine=slow)
        fake_api.message("@qwen_test_bot write a lot", chat_id=GROUP, chat_type="supergroup",
                         entities=MENTION)  # fmt: skip
        streaming = await fake_api.wait_for(lambda: with_button(fake_api, GROUP, "Stop"))
        data = button_data(streaming[-1])
        fake_api.press(streaming[-1].result, data, user_id=2002)  # someone else
        await fake_api.wait_for(lambda: callback_answers(fake_api))
        assert callback_answers(fake_api) == [formatting.not_your_button(EN)]
        assert slow.busy  # still writing

        fake_api.press(streaming[-1].result, data)  # the asker
        stopped = await fake_api.wait_for(lambda: with_button(fake_api, GROUP, "Retry"))
        assert stopped[-1]["text"].endswith(formatting.stopped(EN))
        assert len(stopped[-1]["text"]) > len(formatting.stopped(EN)) + 2  # the words so far
        await fake_api.wait_for(lambda: not slow.busy)
        assert slow.snapshot().errors.get("cancelled") == 1  # the engine stopped generating
    finally:
        await slow.close()


async def test_stop_command_stops_a_private_answer_streamed_as_drafts(
    start_bot: StartBot, fake_api: FakeBotAPI, engine_settings: EngineSettings
) -> None:
    slow = await slow_engine(engine_settings)
    try:
        await start_bot(use_engine=slow)
        fake_api.message("/stop@other_bot")  # for another bot: not a word from this one
        fake_api.message("/stop")  # nothing to stop yet
        fake_api.message("write a lot")
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1001))
        fake_api.message("/stop")  # not queued behind the answer it stops
        stopped = await fake_api.wait_for(lambda: with_button(fake_api, 1001, "Retry"))
        assert stopped[-1]["text"].endswith(formatting.stopped(EN))
        said = [c["text"] for c in fake_api.sent("sendMessage", 1001)]
        assert said[0] == formatting.nothing_to_stop(EN)
        assert said.count(formatting.nothing_to_stop(EN)) == 1  # not for /stop@other_bot
        await fake_api.wait_for(lambda: not slow.busy)
        assert slow.snapshot().errors.get("cancelled") == 1
    finally:
        await slow.close()


def record_answers(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each answer the engine finishes, as generated (what the history keeps)."""
    answers: list[str] = []
    original = engine.stream

    async def stream(request: Any) -> AsyncIterator[Any]:
        async with contextlib.aclosing(original(request)) as events:
            async for event in events:
                if isinstance(event, Finished):
                    answers.append(event.as_generated)
                yield event

    monkeypatch.setattr(engine, "stream", stream)
    return answers


async def test_retry_answers_again_and_the_history_keeps_only_the_new_answer(
    start_bot: StartBot,
    fake_api: FakeBotAPI,
    tmp_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = record_answers(engine, monkeypatch)
    await start_bot()
    asked = fake_api.message("tell me a story")
    first = await fake_api.wait_for(lambda: with_button(fake_api, 1001, "Retry"))
    fake_api.press(first[-1].result, button_data(first[-1]), user_id=2002)
    await fake_api.wait_for(lambda: callback_answers(fake_api))
    assert callback_answers(fake_api) == [formatting.not_your_button(EN)]

    fake_api.press(first[-1].result, button_data(first[-1]))
    fake_api.press(first[-1].result, button_data(first[-1]))  # a double click: one retry
    second = await fake_api.wait_for(lambda: with_button(fake_api, 1001, "Retry")[1:])
    new = second[-1]
    assert new["reply_parameters"]["message_id"] == asked["message"]["message_id"]  # quoted
    assert fake_api.sent("editMessageReplyMarkup", 1001)  # the old answer lost its button
    await asyncio.sleep(0.5)  # a second retry would have started by now
    assert len(answers) == 2 and answers[1] != answers[0]  # sampled afresh

    history = HistoryStore(tmp_path / "history", 1 << 20)
    try:
        turns = history.load("telegram:1001:")
    finally:
        history.close()
    assert [turn.role for turn in turns] == ["user", "assistant"]
    assert turns[1].content == answers[1]  # the new answer only

    # A newer exchange makes the older answer's Retry expire; an unknown button too.
    fake_api.message("and another")
    await fake_api.wait_for(lambda: len(with_button(fake_api, 1001, "Retry")) == 3)
    fake_api.press(new.result, button_data(new))
    fake_api.press(new.result, "retry:feedfacecafe")
    await fake_api.wait_for(lambda: len(callback_answers(fake_api)) == 5)
    expired: list[Any] = callback_answers(fake_api)[3:]  # after "not yours" and the asker's two
    assert expired == [formatting.button_expired(EN)] * 2


def discord_buttons(fake: FakeDiscord, label: str) -> list[dict[str, Any]]:
    """The bot's messages in the channel that carry a button labelled `label`."""
    return [m for m in fake.bot_messages(CHANNEL_ID) if label in str(m.get("components", ""))]


def custom_id(message: dict[str, Any]) -> str:
    return str(message["components"][0]["components"][0]["custom_id"])


async def test_discord_answers_carry_stop_and_retry_for_the_asker(
    start_discord: StartDiscord, fake_discord: FakeDiscord, engine_settings: EngineSettings
) -> None:
    slow = await slow_engine(engine_settings)
    try:
        await start_discord(use_engine=slow)
        asked = await fake_discord.message_create(f"<@{BOT_ID}> write a lot", mentions=[BOT_ID])
        streaming = await fake_discord.wait_for(lambda: discord_buttons(fake_discord, "Stop"))
        answer_id = int(streaming[-1]["id"])
        other = await fake_discord.press(answer_id, custom_id(streaming[-1]), user_id=ADMIN_USER_ID)
        await fake_discord.wait_for(lambda: fake_discord.interaction_responses(other))
        refused = fake_discord.interaction_responses(other)[0]["data"]
        assert refused["content"] == formatting.not_your_button(EN)
        assert refused["flags"] & EPHEMERAL and slow.busy

        await fake_discord.press(answer_id, custom_id(streaming[-1]))
        stopped = await fake_discord.wait_for(lambda: discord_buttons(fake_discord, "Retry"))
        assert stopped[-1]["content"].endswith(formatting.stopped(EN))
        await fake_discord.wait_for(lambda: not slow.busy)
        assert slow.snapshot().errors.get("cancelled") == 1

        await fake_discord.press(int(stopped[-1]["id"]), custom_id(stopped[-1]))
        await fake_discord.wait_for(lambda: not discord_buttons(fake_discord, "Stop") and [
            m for m in discord_buttons(fake_discord, "Retry") if "⚡" in m["content"]
        ], within=60)  # fmt: skip
        newer = [m for m in fake_discord.bot_messages(CHANNEL_ID) if int(m["id"]) > answer_id]
        replies = [m for m in newer if "message_reference" in m]  # the first part of each
        assert int(replies[-1]["message_reference"]["message_id"]) == int(asked["id"])
        old = fake_discord.messages[int(stopped[-1]["id"])]
        assert not old.get("components")  # the stopped answer lost its Retry
        expired = await fake_discord.press(int(old["id"]), "qwenbot:retry:feedfacecafe")
        await fake_discord.wait_for(lambda: fake_discord.interaction_responses(expired))
        said = fake_discord.interaction_responses(expired)[0]["data"]["content"]
        assert said == formatting.button_expired(EN)
    finally:
        await slow.close()


async def test_a_button_pressed_after_a_restart_says_it_has_expired(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    first = await start_bot()
    fake_api.message("tell me a story")
    answered = await fake_api.wait_for(lambda: with_button(fake_api, 1001, "Retry"))
    await first.shutdown()
    await start_bot()  # a new process: its buttons' memory starts empty
    fake_api.press(answered[-1].result, button_data(answered[-1]))
    await fake_api.wait_for(lambda: callback_answers(fake_api))
    assert callback_answers(fake_api) == [formatting.button_expired(EN)]
    assert len(with_button(fake_api, 1001, "Retry")) == 1  # nothing answered again
