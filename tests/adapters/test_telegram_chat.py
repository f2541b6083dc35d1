"""Telegram users' view: private streaming, groups, topics, commands, non-text messages."""

from __future__ import annotations

import itertools

from bot.formatting import admin_only
from bot.i18n import translator
from tests.adapters.conftest import StartBot
from tests.support.fake_telegram import BOT_USER, STICKER, FakeBotAPI

GROUP = -100123


def finals(api: FakeBotAPI, chat_id: int) -> list[str]:
    """Final texts in a chat: a message sent or edited with the speed footer."""
    calls = api.sent("sendMessage", chat_id) + api.sent("editMessageText", chat_id)
    return [c["text"] for c in sorted(calls, key=lambda c: c.at) if "⚡" in c["text"]]


async def test_private_message_streams_drafts_then_sends_the_final_answer(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    await start_bot()
    fake_api.message("Hello bot")
    final = await fake_api.wait_for(lambda: finals(fake_api, 1001))
    drafts = fake_api.sent("sendMessageDraft", 1001)
    assert drafts, "the answer should stream as drafts first"
    assert {int(d["draft_id"]) for d in drafts} == {int(drafts[0]["draft_id"])}
    assert final[0].rstrip().endswith("tokens")  # footer under the final message
    assert fake_api.sent("sendChatAction", 1001)[0]["action"] == "typing"
    commands = fake_api.sent("setMyCommands")[0]["commands"]
    assert {c["command"] for c in commands} >= {"start", "help", "reset", "stats"}


async def test_group_is_silent_unless_addressed(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    await start_bot()
    fake_api.message("people talking", chat_id=GROUP, chat_type="supergroup")
    mention = "@qwen_test_bot what is up?"
    asked = fake_api.message(
        mention,
        chat_id=GROUP,
        chat_type="supergroup",
        entities=[{"type": "mention", "offset": 0, "length": 14}],
    )
    await fake_api.wait_for(lambda: finals(fake_api, GROUP))
    sends = fake_api.sent("sendMessage", GROUP)
    assert all(s["reply_parameters"]["message_id"] == asked["message"]["message_id"] for s in sends)
    assert not fake_api.sent("sendMessageDraft")  # drafts are for private chats only
    edits = [c["text"] for c in fake_api.sent("editMessageText", GROUP)]
    assert all(a != b for a, b in itertools.pairwise(edits))  # never the same edit twice

    bot_message = {
        "message_id": 7,
        "date": 0,
        "chat": {"id": GROUP, "type": "supergroup"},
        "from": BOT_USER,
        "text": "an earlier answer",
    }
    fake_api.message("and why?", chat_id=GROUP, chat_type="supergroup", reply_to=bot_message)
    await fake_api.wait_for(lambda: len(finals(fake_api, GROUP)) == 2)


async def test_forum_topic_gets_its_reply_and_its_own_history(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    await start_bot()
    topic_root = {
        "message_id": 5,
        "date": 0,
        "chat": {"id": GROUP, "type": "supergroup"},
        "from": {"id": 1001, "is_bot": False, "first_name": "Lan"},
        "forum_topic_created": {"name": "Cooking", "icon_color": 7322096},
    }
    entities = [{"type": "mention", "offset": 0, "length": 14}]
    for _ in range(2):
        fake_api.message(
            "@qwen_test_bot tell me more",
            chat_id=GROUP,
            chat_type="supergroup",
            thread_id=5,
            reply_to=topic_root,
            entities=entities,
        )
    await fake_api.wait_for(lambda: len(finals(fake_api, GROUP)) == 2)
    sends = fake_api.sent("sendMessage", GROUP)
    assert {int(s["message_thread_id"]) for s in sends} == {5}
    assert {int(c["message_thread_id"]) for c in fake_api.sent("sendChatAction", GROUP)} == {5}


async def test_stats_for_admins_only(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    await start_bot(bot={"admin_ids": frozenset({77})})
    fake_api.message("/stats", chat_id=1001, user_id=1001)
    fake_api.message("/stats", chat_id=77, user_id=77)
    refused = await fake_api.wait_for(lambda: fake_api.sent("sendMessage", 1001))
    shown = await fake_api.wait_for(lambda: fake_api.sent("sendMessage", 77))
    assert refused[0]["text"] == admin_only(translator("en"))
    assert "Requests" in shown[0]["text"] and "quantization" in shown[0]["text"]


async def test_non_text_messages(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    await start_bot()
    fake_api.message(None, extra=STICKER)
    fake_api.message(None, chat_id=GROUP, chat_type="supergroup", extra=STICKER)
    photo = {
        "photo": [{"file_id": "p", "file_unique_id": "q", "width": 1, "height": 1}],
        "caption": "what is in this picture?",
    }
    fake_api.message(None, chat_id=2002, user_id=2002, extra=photo)
    text_only = await fake_api.wait_for(lambda: fake_api.sent("sendMessage", 1001))
    assert "text only" in text_only[0]["text"]
    await fake_api.wait_for(lambda: finals(fake_api, 2002))  # a caption counts as text
    assert not fake_api.sent("sendMessage", GROUP)


async def test_duplicate_update_is_answered_once(start_bot: StartBot, fake_api: FakeBotAPI) -> None:
    await start_bot()
    update = fake_api.message("only once please")
    fake_api.push(dict(update))  # redelivered with the same update_id
    fake_api.message("/help")  # a later update, to know the first two were handled
    await fake_api.wait_for(
        lambda: any("/reset" in c["text"] for c in fake_api.sent("sendMessage"))
    )
    assert len(finals(fake_api, 1001)) == 1


async def test_a_long_vietnamese_paste_is_read_and_answered(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    paragraph = (
        "Hà Nội là thủ đô của Việt Nam, nổi tiếng với phố cổ, hồ Hoàn Kiếm và những món ăn "
        "đường phố như phở, bún chả và bánh cuốn. "
    )
    text = paragraph * (6000 // len(paragraph) + 1) + "\n\nTóm tắt đoạn trên."
    assert len(text) > 6000
    await start_bot()
    fake_api.message(text)
    await fake_api.wait_for(lambda: finals(fake_api, 1001), within=120)
    drafts = [d["text"] for d in fake_api.sent("sendMessageDraft", 1001)]
    assert any(d.startswith("📖 reading your text (") for d in drafts)
    assert not [c for c in fake_api.sent("sendMessage", 1001) if "too long" in c["text"]]
