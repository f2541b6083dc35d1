"""Discord: the error handlers, a token that never reaches the logs, the real model, and
`qwenbot all` serving Telegram and Discord from one engine."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from engine.config import EngineSettings
from tests.adapters.discord_fixtures import StartDiscord
from tests.adapters.test_discord_chat import MENTION, finals
from tests.support.fake_discord import BOT_ID, CHANNEL_ID, TOKEN, FakeDiscord
from tests.support.logs import all_logs_redacting
from tests.support.smollm2 import smollm2_gguf


async def test_a_failing_reply_ends_in_an_apology_not_a_traceback(
    start_discord: StartDiscord, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    await start_discord()
    fake_discord.fail(
        ("POST", rf"/channels/{CHANNEL_ID}/messages"),
        403,
        {"message": "Missing Permissions", "code": 50013},
    )
    await fake_discord.message_create(f"{MENTION} hello", mentions=[BOT_ID])
    apology = await fake_discord.wait_for(
        lambda: [m for m in fake_discord.bot_messages(CHANNEL_ID) if "went wrong" in m["content"]]
    )
    assert "Traceback" not in apology[0]["content"] and "50013" not in apology[0]["content"]
    assert any("discord event on_message failed" in r.getMessage() for r in caplog.records)


async def test_the_token_never_reaches_the_logs(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    with all_logs_redacting(TOKEN) as stream:
        await start_discord()
        await fake_discord.message_create(f"{MENTION} hi", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: finals(fake_discord))
    logged = stream.getvalue()
    assert "discord" in logged and TOKEN not in logged


@pytest.mark.slow
async def test_paris_from_the_real_model_on_a_mention(
    start_discord: StartDiscord, fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    from engine.config import EngineSettings
    from engine.engine import Engine

    real = Engine(EngineSettings(model=str(smollm2_gguf()), cache_dir=tmp_path / "responses"))
    await real.start()
    try:
        await start_discord(use_engine=real)
        await fake_discord.message_create(
            f"{MENTION} What is the capital of France?", mentions=[BOT_ID]
        )
        final = await fake_discord.wait_for(lambda: finals(fake_discord), 120)
    finally:
        await real.close()
    assert "Paris" in final[0] and "tok/s" in final[0]


async def test_qwenbot_all_serves_telegram_and_discord_on_one_engine(
    fake_discord: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from bot.__main__ import run_platforms
    from bot.settings import BotSettings, DiscordSettings, Settings, TelegramSettings
    from engine.config import EngineSettings
    from tests.adapters.test_telegram_chat import finals as telegram_finals
    from tests.support.fake_telegram import TOKEN as TELEGRAM_TOKEN
    from tests.support.fake_telegram import FakeBotAPI

    telegram = FakeBotAPI()
    await telegram.start()
    settings = Settings(
        engine=EngineSettings(model=str(tiny_model_dir), cache_dir=tmp_path / "c", warmup=False),
        bot=BotSettings(history_dir=tmp_path / "h", inbox_dir=tmp_path / "inbox"),
        telegram=TelegramSettings(token=TELEGRAM_TOKEN, base_url=telegram.base_url),
        discord=DiscordSettings(token=TOKEN, guild_id=7000),
    )
    serving = asyncio.create_task(run_platforms(settings, ["telegram", "discord"]))
    try:
        await telegram.wait_for(lambda: telegram.sent("setMyCommands"), 60)
        await fake_discord.wait_for(lambda: fake_discord.commands, 60)
        await asyncio.sleep(2.5)  # discord.py waits for its guilds before on_ready
        telegram.message("hello from Telegram")
        await fake_discord.message_create(f"{MENTION} hello from Discord", mentions=[BOT_ID])
        await telegram.wait_for(lambda: telegram_finals(telegram, 1001), 60)
        await fake_discord.wait_for(lambda: finals(fake_discord), 60)
        os.kill(os.getpid(), signal.SIGTERM)  # what a service manager sends
        assert await asyncio.wait_for(serving, 60) == 0
    finally:
        if not serving.done():
            serving.cancel()
        await telegram.stop()


async def test_answers_cancelled_by_a_shutdown_are_given_after_the_restart(
    engine_settings: EngineSettings, start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    from engine.engine import Engine

    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    try:
        first = await start_discord(use_engine=slow, shutdown_grace_s=0.2)
        asked = await fake_discord.message_create(f"{MENTION} a long story", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(CHANNEL_ID))
        await first.shutdown()  # cancelled after the grace: the half answer is taken back
        assert not fake_discord.bot_messages(CHANNEL_ID)
    finally:
        await slow.close()

    await start_discord()
    await fake_discord.wait_for(lambda: finals(fake_discord), 60)
    await asyncio.sleep(0.3)
    replies = fake_discord.bot_messages(CHANNEL_ID)
    assert len(replies) == 1 and "⚡" in replies[0]["content"]
    assert replies[0]["message_reference"]["message_id"] == str(asked["id"])
