"""The bot speaks its users' languages: Telegram's language_code, Discord's locales."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bot import formatting
from bot.commands import command_descriptions, help_text
from bot.i18n import translator
from engine.engine import Engine
from tests.adapters.conftest import StartBot
from tests.adapters.discord_fixtures import StartDiscord
from tests.support.fake_discord import BOT_ID, CHANNEL_ID, FakeDiscord
from tests.support.fake_telegram import STICKER, FakeBotAPI

VI, EN = translator("vi"), translator("en")


def texts(api: FakeBotAPI, chat_id: int) -> list[str]:
    """What the bot sent to a chat, in order."""
    return [call["text"] for call in api.sent("sendMessage", chat_id)]


async def test_a_vietnamese_user_gets_vietnamese_and_an_english_one_english(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    await start_bot({"max_input_tokens": 40, "rate_limit_burst": 1})
    vi_chat, en_chat = 1001, 2002
    fake_api.message("/help", chat_id=vi_chat, user_id=vi_chat, language="vi")
    fake_api.message("/help", chat_id=en_chat, user_id=en_chat, language="en-GB")
    await fake_api.wait_for(lambda: texts(fake_api, vi_chat) and texts(fake_api, en_chat))
    assert texts(fake_api, vi_chat) == [help_text(VI)]
    assert "Mình là chatbot" in help_text(VI)
    assert texts(fake_api, en_chat) == [help_text(EN)]

    long_text = "đây là một đoạn văn rất dài " * 20
    for chat in (vi_chat, en_chat):
        language = "vi" if chat == vi_chat else "en"
        fake_api.message(long_text, chat_id=chat, user_id=chat, language=language)
        fake_api.message("một câu nữa", chat_id=chat, user_id=chat, language=language)
    await fake_api.wait_for(lambda: len(texts(fake_api, vi_chat)) == 3)
    await fake_api.wait_for(lambda: len(texts(fake_api, en_chat)) == 3)
    too_long, slow_down = texts(fake_api, vi_chat)[1:]
    assert too_long.startswith("Tin nhắn của bạn quá dài với mình")
    assert slow_down.startswith("Bạn đang gửi tin nhắn hơi nhanh")
    too_long, slow_down = texts(fake_api, en_chat)[1:]
    assert too_long.startswith("Your message is too long for me")
    assert slow_down.startswith("You're sending messages quickly")

    fake_api.message(None, chat_id=3003, user_id=3003, extra=STICKER, language="vi-VN")
    await fake_api.wait_for(lambda: texts(fake_api, 3003))
    assert texts(fake_api, 3003) == [formatting.text_only(VI)]

    menus = {call.get("language_code"): call["commands"] for call in fake_api.sent("setMyCommands")}
    assert set(menus) == {None, "vi"}  # English for everyone, Vietnamese for vi apps
    described = {command["command"]: command["description"] for command in menus["vi"]}
    assert described == command_descriptions(VI)


async def test_bot_language_answers_everyone_in_one_language(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    await start_bot({"language": "vi"})
    fake_api.message("/help", language="en")
    await fake_api.wait_for(lambda: texts(fake_api, 1001))
    assert texts(fake_api, 1001) == [help_text(VI)]


async def test_discord_speaks_the_users_client_language_and_the_servers(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    fake_discord.preferred_locale = "vi"  # the server's language, for its messages
    await start_discord({"max_input_tokens": 40})
    helped = await fake_discord.interaction_create("help", locale="vi")
    english = await fake_discord.interaction_create("help", locale="en-GB")
    for interaction in (helped, english):
        await fake_discord.wait_for(lambda i=interaction: fake_discord.interaction_responses(i))
    assert fake_discord.interaction_responses(helped)[0]["data"]["content"] == help_text(VI)
    assert fake_discord.interaction_responses(english)[0]["data"]["content"] == help_text(EN)

    await fake_discord.message_create(f"<@{BOT_ID}> " + "rất dài " * 60, mentions=[BOT_ID])
    refused = await fake_discord.wait_for(
        lambda: [m for m in fake_discord.bot_messages(CHANNEL_ID) if "quá dài" in m["content"]]
    )
    assert refused[0]["content"].startswith("Tin nhắn của bạn quá dài với mình")

    synced = {command["name"]: command for command in fake_discord.commands.values()}
    localized = synced["reset"]["description_localizations"]
    assert localized["vi"] == command_descriptions(VI)["reset"]
    assert synced["reset"]["description"] == command_descriptions(EN)["reset"]


async def test_the_console_speaks_the_terminals_language(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.console_adapter import ConsoleChat
    from bot.history import HistoryStore
    from bot.service import ChatService
    from bot.settings import BotSettings

    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("LANG", "vi_VN.UTF-8")
    store = HistoryStore(tmp_path / "history", 1 << 20)
    try:
        out = io.StringIO()
        chat = ConsoleChat(ChatService(engine, BotSettings(), store), out=out, err=io.StringIO())
        await chat.ask("/help")
    finally:
        store.close()
    assert out.getvalue().strip() == help_text(VI)
