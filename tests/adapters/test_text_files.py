"""Text sent as files: Telegram documents and Discord attachments read as the message."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.i18n import translator
from bot.text_files import FileRefused, refusal
from engine.config import EngineSettings
from engine.engine import Engine
from tests.adapters.conftest import StartBot
from tests.adapters.discord_fixtures import StartDiscord
from tests.support.fake_discord import BOT_ID, CHANNEL_ID, FakeDiscord
from tests.support.fake_telegram import FakeBotAPI

NOTES = "Shopping list\n- 3 lemons\n- olive oil\n- basil\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)


def prompts_seen(engine: Engine) -> list[str]:
    """The user turns of every request the engine received since the watch began."""
    return [request.messages[-1].content for request in getattr(engine, "seen", [])]


def watch(engine: Engine, monkeypatch: Any) -> None:
    """Record each request the engine is asked for (its stream is left as it is)."""
    seen: list[Any] = []
    engine.seen = seen  # type: ignore[attr-defined]
    original = engine.stream

    def stream(request: Any) -> Any:
        seen.append(request)
        return original(request)

    monkeypatch.setattr(engine, "stream", stream)


def finals(api: FakeBotAPI, chat_id: int) -> list[str]:
    calls = api.sent("sendMessage", chat_id) + api.sent("editMessageText", chat_id)
    return [c["text"] for c in calls if "⚡" in c["text"]]


async def test_a_telegram_document_is_read_with_its_caption_as_the_question(
    start_bot: StartBot, fake_api: FakeBotAPI, engine: Engine, monkeypatch: Any
) -> None:
    watch(engine, monkeypatch)
    await start_bot()
    fake_api.document(NOTES.encode(), "notes.txt", caption="how many lemons?")
    await fake_api.wait_for(lambda: finals(fake_api, 1001))
    assert prompts_seen(engine) == [f"how many lemons?\n\n[notes.txt]\n{NOTES.strip()}"]

    # No caption: summarised, asked in the user's language; a BOM and CRLFs are dropped.
    data = ("\ufeff" + NOTES.replace("\n", "\r\n")).encode()
    fake_api.document(data, "list.md", mime_type=None, chat_id=2002, user_id=2002, language="vi")
    await fake_api.wait_for(lambda: finals(fake_api, 2002))
    assert prompts_seen(engine)[1] == f"Tóm tắt tệp này.\n\n[list.md]\n{NOTES.strip()}"


async def test_binary_and_oversized_files_get_a_clear_answer_in_the_users_language(
    start_bot: StartBot, fake_api: FakeBotAPI, engine: Engine, monkeypatch: Any
) -> None:
    watch(engine, monkeypatch)
    await start_bot({"max_file_bytes": 4096})
    fake_api.document(PNG, "photo.png", mime_type="image/png", language="vi")
    # Unknown type: fetched, and not UTF-8.
    fake_api.document(bytes(range(256)) * 2, "data.bin", mime_type="application/octet-stream",
                      chat_id=2002, user_id=2002)  # fmt: skip
    fake_api.document(b"x" * 5000, "big.log", chat_id=3003, user_id=3003)
    said = {
        chat: await fake_api.wait_for(lambda c=chat: fake_api.sent("sendMessage", c))
        for chat in (1001, 2002, 3003)
    }
    vi, en = translator("vi"), translator("en")
    assert said[1001][0]["text"] == refusal(vi, FileRefused("not_text"))
    assert said[1001][0]["text"].startswith("Mình chỉ đọc tệp văn bản")
    assert said[2002][0]["text"] == refusal(en, FileRefused("not_text"))
    assert "too big" in said[3003][0]["text"] and "4 KB" in said[3003][0]["text"]
    assert not fake_api.sent("getFile", 1001)  # an image is refused before downloading
    assert prompts_seen(engine) == []  # no model call for any of them


async def test_a_file_in_a_group_is_read_only_when_the_bot_is_addressed(
    start_bot: StartBot, fake_api: FakeBotAPI, engine: Engine, monkeypatch: Any
) -> None:
    watch(engine, monkeypatch)
    await start_bot()
    group = {"chat_id": -100123, "chat_type": "supergroup"}
    fake_api.document(NOTES.encode(), "notes.txt", **group)  # people sharing files
    mention = [{"type": "mention", "offset": 0, "length": 14}]
    fake_api.document(NOTES.encode(), "notes.txt", caption="@qwen_test_bot summarise",
                      extra={"caption_entities": mention}, **group)  # fmt: skip
    await fake_api.wait_for(lambda: finals(fake_api, -100123))
    assert prompts_seen(engine) == [f"summarise\n\n[notes.txt]\n{NOTES.strip()}"]
    assert len(fake_api.sent("getFile")) == 1


async def test_discord_reads_a_pasted_message_txt_and_attached_files(
    start_discord: StartDiscord, fake_discord: FakeDiscord, engine: Engine, monkeypatch: Any
) -> None:
    watch(engine, monkeypatch)
    await start_discord()
    paste = "A long pasted text. " * 120 + "What is it about?"
    pasted = [("message.txt", paste.encode())]
    await fake_discord.message_create("", guild=False, attachments=pasted)
    await fake_discord.wait_for(lambda: prompts_seen(engine))
    assert prompts_seen(engine) == [paste]  # the paste is the message itself
    await fake_discord.message_create(
        f"<@{BOT_ID}> how many lemons?", mentions=[BOT_ID],
        attachments=[("notes.txt", NOTES.encode())],
    )  # fmt: skip
    await fake_discord.wait_for(lambda: len(prompts_seen(engine)) == 2)
    assert prompts_seen(engine)[1] == f"how many lemons?\n\n[notes.txt]\n{NOTES.strip()}"
    await fake_discord.message_create(
        f"<@{BOT_ID}>", mentions=[BOT_ID], attachments=[("photo.png", PNG)]
    )
    refused = await fake_discord.wait_for(
        lambda: [m for m in fake_discord.bot_messages(CHANNEL_ID) if "text files" in m["content"]]
    )
    assert refused[0]["content"] == refusal(translator("en"), FileRefused("not_text"))
    assert len(prompts_seen(engine)) == 2


def long_paste() -> list[str]:
    """A 9,000-character text cut as Telegram's apps cut it: at a line end before 4,096."""
    lines = [f"Line {n}: the harbour log records ships, cargo and weather." for n in range(150)]
    text = "\n".join(lines) + "\nWhat does this log say about the weather?"
    parts: list[str] = []
    while text:
        cut = text.rfind("\n", 0, 4096) if len(text) > 4096 else len(text)
        parts.append(text[:cut])
        text = text[cut + 1 :]
    return parts


async def test_a_long_text_split_by_telegram_is_answered_once_as_one_message(
    start_bot: StartBot, fake_api: FakeBotAPI, engine: Engine, monkeypatch: Any
) -> None:
    watch(engine, monkeypatch)
    await start_bot({"rate_limit_burst": 1})  # each part alone would be rate limited
    parts = long_paste()
    assert len(parts) == 3 and all(len(part) <= 4096 for part in parts)
    assert sum(map(len, parts)) > 8500
    for part in parts:
        fake_api.message(part)
    await fake_api.wait_for(lambda: finals(fake_api, 1001))
    await asyncio.sleep(2.0)  # longer than the window: nothing else comes
    assert len(finals(fake_api, 1001)) == 1
    assert prompts_seen(engine) == ["\n".join(parts)]
    assert not [c for c in fake_api.sent("sendMessage", 1001) if "quickly" in c["text"]]

    # Short messages sent back to back stay separate messages (the second one is over
    # this test's limit of one message at once).
    fake_api.message("first", chat_id=2002, user_id=2002)
    fake_api.message("second", chat_id=2002, user_id=2002)
    await fake_api.wait_for(
        lambda: [c for c in fake_api.sent("sendMessage", 2002) if "quickly" in c["text"]]
    )
    await fake_api.wait_for(lambda: finals(fake_api, 2002))
    assert prompts_seen(engine)[1:] == ["first"]


async def test_a_paste_cut_off_by_a_shutdown_is_joined_again_after_the_restart(
    start_bot: StartBot,
    fake_api: FakeBotAPI,
    engine: Engine,
    engine_settings: EngineSettings,
    monkeypatch: Any,
) -> None:
    # Long enough to be cut off, short enough to leave the paste room in the tiny context.
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 1500}))
    await slow.start()
    try:
        first = await start_bot({"rate_limit_burst": 1}, use_engine=slow, shutdown_grace_s=0.2)
        parts = long_paste()
        for part in parts:
            fake_api.message(part)
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1001))
        await first.shutdown()  # mid-answer: every part is still owed
        assert not finals(fake_api, 1001)
    finally:
        await slow.close()
    watch(engine, monkeypatch)
    await start_bot({"rate_limit_burst": 1})
    await fake_api.wait_for(lambda: finals(fake_api, 1001))
    await asyncio.sleep(2.0)  # longer than the window: nothing else comes
    assert len(finals(fake_api, 1001)) == 1
    assert prompts_seen(engine) == ["\n".join(parts)]  # read back and joined again
