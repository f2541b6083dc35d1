"""Telegram delivery under pressure: limits, rejected formatting, 429 and 5xx, concurrency,
ordering, overload, shutdown, webhooks, and a token that never reaches the logs."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from telegram import Bot

from adapters.telegram_render import ReplyTarget, TelegramReplyRenderer
from bot.messages import QueuePosition, ReplyDone, ReplyEvent, ReplyText
from bot.splitting import utf16_length
from engine.config import EngineSettings
from engine.engine import Engine
from engine.events import ReplyStats
from tests.adapters.conftest import StartBot
from tests.adapters.test_telegram_chat import GROUP, finals
from tests.support.fake_telegram import TOKEN, Failure, FakeBotAPI
from tests.support.logs import all_logs_redacting

STATS = ReplyStats(10, 2000, 0.2, 30.0, 60.0, 0.0, False)


async def _events(*events: ReplyEvent):  # type: ignore[no-untyped-def]
    for event in events:
        yield event


async def _render(api: FakeBotAPI, events: list[ReplyEvent], private: bool = True) -> None:
    async with Bot(TOKEN, base_url=api.base_url) as bot:
        renderer = TelegramReplyRenderer(
            bot, ReplyTarget(1001, None, 55, private), use_drafts=True, interval_s=0.0
        )
        await renderer.render(_events(*events))


async def test_a_9000_character_answer_arrives_as_three_messages_within_the_limit(
    fake_api: FakeBotAPI,
) -> None:
    paragraph = "Phở bò 🍜 ngon lắm! " * 20  # 380 characters, 400 UTF-16 units
    text = "\n\n".join([paragraph.strip()] * 24)  # about 9,100 characters
    assert 8_800 < len(text) < 9_200
    await _render(fake_api, [ReplyText(text[:5000]), ReplyDone(text, "⚡ footer", STATS)])
    sent = [c["text"] for c in fake_api.sent("sendMessage")]
    assert len(sent) == 3
    assert all(utf16_length(part) <= 4096 for part in sent)
    assert "🍜" in sent[0] and sent[-1].endswith("⚡ footer")
    assert "".join(sent).count("🍜") == text.count("🍜")


async def test_a_slow_api_slows_the_updates_instead_of_multiplying_them(
    fake_api: FakeBotAPI,
) -> None:
    """Under load (a rate limiter waiting) events pile up while a draft is sent: they must
    fold into the next update, not each send one (the crowd's 8,000 drafts)."""
    fake_api.delays["sendMessageDraft"] = 0.2
    async with Bot(TOKEN, base_url=fake_api.base_url) as bot:
        renderer = TelegramReplyRenderer(
            bot, ReplyTarget(1001, None, 55, True), use_drafts=True, interval_s=0.1
        )
        places = [QueuePosition(ahead, 10.0) for ahead in range(20, 0, -1)]
        words = [ReplyText(f"word{n} ") for n in range(30)]  # all arrived while busy
        await renderer.render(_events(*places, *words, ReplyDone("done", None, STATS)))
    drafts = [c["text"] for c in fake_api.sent("sendMessageDraft", 1001)]
    assert drafts[0].startswith("⏳ queued, 20 ahead") and len(drafts) <= 3
    assert fake_api.sent("sendMessage", 1001)[0]["text"] == "done"


async def test_code_block_split_is_closed_and_reopened(fake_api: FakeBotAPI) -> None:
    code = "```python\n" + "print('xin chào')\n" * 400 + "```"
    await _render(fake_api, [ReplyDone(code, None, STATS)])
    sent = [c["text"] for c in fake_api.sent("sendMessage")]
    assert len(sent) == 2
    assert all(part.count("<pre>") == part.count("</pre>") == 1 for part in sent)
    assert 'class="language-python"' in sent[1]


async def test_rejected_formatting_is_resent_as_plain_text(fake_api: FakeBotAPI) -> None:
    fake_api.fail(
        "sendMessage",
        Failure(
            400,
            "Bad Request: can't parse entities: unsupported start tag",
            None,
            lambda p: p.get("parse_mode") == "HTML",
        ),
    )
    await _render(fake_api, [ReplyDone("Some **bold** and <weird> text", None, STATS)])
    sent = fake_api.sent("sendMessage", failed=True)
    assert sent[0]["parse_mode"] == "HTML" and not sent[0].ok
    assert (
        "parse_mode" not in sent[1].params and sent[1]["text"] == "Some **bold** and <weird> text"
    )


async def test_429_and_5xx_on_the_final_send_still_deliver(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    await start_bot()
    fake_api.fail("sendMessage", Failure(429, "Too Many Requests: retry after 1", 1))
    fake_api.fail("sendMessage", Failure(502, "Bad Gateway"))
    fake_api.message("Please answer despite the trouble")
    final = await fake_api.wait_for(lambda: finals(fake_api, 1001))
    attempts = fake_api.sent("sendMessage", 1001, failed=True)
    assert [a.ok for a in attempts] == [False, False, True] and len(final) == 1
    assert attempts[1].at - attempts[0].at >= 0.9  # the 429 was waited out


async def test_two_chats_are_served_concurrently_and_overload_is_polite(
    engine_settings: EngineSettings, start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    # One reply at a time (a full batch), so the second chat waits in the queue.
    one_at_a_time = {"queue_size": 1, "max_new_tokens": 400, "max_batch": 1}
    busy = Engine(engine_settings.model_copy(update=one_at_a_time))
    await busy.start()
    try:
        await start_bot(use_engine=busy, bot={"rate_limit_burst": 10})
        fake_api.message("long answer please", chat_id=1, user_id=1)
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1))
        fake_api.message("me too", chat_id=2, user_id=2)
        queued = await fake_api.wait_for(
            lambda: [d for d in fake_api.sent("sendMessageDraft", 2) if "queued" in d["text"]]
        )
        assert "1 ahead" in queued[0]["text"]
        fake_api.message("and me", chat_id=3, user_id=3)
        refused = await fake_api.wait_for(lambda: fake_api.sent("sendMessage", 3))
        assert "wait too long" in refused[0]["text"]
        await fake_api.wait_for(lambda: finals(fake_api, 1) and finals(fake_api, 2))
        assert finals(fake_api, 1)[0] != ""
    finally:
        await busy.close()


async def test_one_chat_is_answered_in_order(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    await start_bot(bot={"rate_limit_burst": 10})
    entities = [{"type": "mention", "offset": 0, "length": 14}]
    asked = [
        fake_api.message(
            f"@qwen_test_bot question {i}", chat_id=GROUP, chat_type="supergroup", entities=entities
        )["message"]["message_id"]
        for i in range(3)
    ]
    await fake_api.wait_for(lambda: len(finals(fake_api, GROUP)) == 3)
    first_send_for = [
        next(
            c.at
            for c in fake_api.sent("sendMessage", GROUP)
            if c["reply_parameters"]["message_id"] == message_id
        )
        for message_id in asked
    ]
    assert first_send_for == sorted(first_send_for)
    final_edits = [c.at for c in fake_api.sent("editMessageText", GROUP) if "⚡" in c["text"]]
    assert final_edits[0] < first_send_for[1] and final_edits[1] < first_send_for[2]


async def test_shutdown_with_a_reply_in_flight(
    engine_settings: EngineSettings, start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    try:
        running = await start_bot(use_engine=slow, shutdown_grace_s=0.2)
        fake_api.message("a very long answer")
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1001))
        await running.shutdown()  # returns: the reply was cancelled after the grace period
        calls = len(fake_api.calls)
        await asyncio.sleep(0.3)
        assert len(fake_api.calls) == calls  # nothing more is sent after shutdown
    finally:
        await slow.close()
    assert not slow.busy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_webhook_mode_answers_posted_updates_with_the_right_secret(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    port = _free_port()
    await start_bot(
        mode="webhook",
        webhook_url="https://bot.example.invalid/telegram",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_secret="s3cret-path-token",
    )
    registered = fake_api.sent("setWebhook")[0]
    assert registered["url"] == "https://bot.example.invalid/telegram"
    update = {
        "update_id": 900,
        "message": {
            "message_id": 1,
            "date": 0,
            "text": "hello by webhook",
            "chat": {"id": 1001, "type": "private", "first_name": "Lan"},
            "from": {"id": 1001, "is_bot": False, "first_name": "Lan"},
        },
    }
    url = f"http://127.0.0.1:{port}/telegram"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        ) as refused:
            assert refused.status == 403
        async with http.post(
            url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-path-token"}
        ) as accepted:
            assert accepted.status == 200
    await fake_api.wait_for(lambda: finals(fake_api, 1001))


async def test_the_token_never_reaches_the_logs(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    with all_logs_redacting(TOKEN) as stream:
        await start_bot()
        fake_api.message("hello")
        await fake_api.wait_for(lambda: finals(fake_api, 1001))
    logged = stream.getvalue()
    assert "getUpdates" in logged or "sendMessage" in logged  # the URLs were logged...
    assert TOKEN not in logged and TOKEN.split(":")[1] not in logged  # ...without the token


async def test_not_modified_edits_are_harmless(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    await start_bot()
    fake_api.fail(
        "editMessageText",
        Failure(400, "Bad Request: message is not modified", None, lambda p: "⚡" not in p["text"]),
        times=3,
    )
    entities = [{"type": "mention", "offset": 0, "length": 14}]
    fake_api.message("@qwen_test_bot hi", chat_id=GROUP, chat_type="supergroup", entities=entities)
    await fake_api.wait_for(lambda: finals(fake_api, GROUP))
    assert not [c for c in fake_api.sent("sendMessage", GROUP) if "wrong" in c["text"]]


async def test_unexpected_errors_become_an_apology_and_a_log_line(
    start_bot: StartBot, fake_api: FakeBotAPI, caplog: pytest.LogCaptureFixture
) -> None:
    await start_bot()
    fake_api.fail("sendMessage", Failure(400, "Bad Request: chat not found"))
    update = fake_api.message("hello?")
    apology = await fake_api.wait_for(
        lambda: [c for c in fake_api.sent("sendMessage", 1001) if "went wrong" in c["text"]]
    )
    assert "Traceback" not in apology[0]["text"] and "chat not found" not in apology[0]["text"]
    assert any(f"update {update['update_id']} failed" in r.getMessage() for r in caplog.records)


async def test_typing_is_refreshed_while_the_reply_waits(
    engine_settings: EngineSettings,
    start_bot: StartBot,
    fake_api: FakeBotAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import adapters.telegram_render as render

    monkeypatch.setattr(render, "TYPING_REFRESH_S", 0.1)
    # One reply at a time (a full batch), so the second chat waits in the queue.
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 300, "max_batch": 1}))
    await slow.start()
    try:
        await start_bot(use_engine=slow)
        fake_api.message("first", chat_id=1, user_id=1)
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1))
        fake_api.message("second", chat_id=2, user_id=2)  # waits behind the first
        await fake_api.wait_for(lambda: finals(fake_api, 2))
        typing = fake_api.sent("sendChatAction", 2)
        first_text = min(
            c.at for c in fake_api.sent("sendMessageDraft", 2) if "queued" not in c["text"]
        )
        assert len(typing) >= 2 and all(c.at <= first_text for c in typing)
    finally:
        await slow.close()
