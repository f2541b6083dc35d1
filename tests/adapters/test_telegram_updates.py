"""Telegram messages to IncomingMessage, on real python-telegram-bot objects."""

from __future__ import annotations

from typing import Any

from telegram import Message, User

from adapters.telegram_updates import to_incoming
from tests.support.fake_telegram import BOT_USER

BOT = User(BOT_USER["id"], BOT_USER["first_name"], True, username=BOT_USER["username"])


def _message(text: str, **fields: Any) -> Message:
    data = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": -100, "type": "supergroup", "title": "g"},
        "from": {"id": 5, "is_bot": False, "first_name": "Lan", "last_name": "Trần"},
        "text": text,
        **fields,
    }
    return Message.de_json(data, None)


def test_mention_after_emoji_is_cut_by_utf16_offsets() -> None:
    text = "Chào 👋 @qwen_test_bot bạn khỏe không?"
    offset = len("Chào 👋 ".encode("utf-16-le")) // 2  # the emoji counts as two units
    incoming = to_incoming(
        _message(text, entities=[{"type": "mention", "offset": offset, "length": 14}]), BOT
    )
    assert incoming.mentions_bot and incoming.text == "Chào 👋 bạn khỏe không?"
    assert incoming.user_name == "Lan Trần" and not incoming.is_private


def test_other_mentions_and_commands_for_other_bots_do_not_count() -> None:
    other = to_incoming(
        _message("@someone_else hi", entities=[{"type": "mention", "offset": 0, "length": 13}]),
        BOT,
    )
    assert not other.mentions_bot and other.text == "@someone_else hi"
    command = to_incoming(
        _message(
            "/ask@other_bot hi", entities=[{"type": "bot_command", "offset": 0, "length": 14}]
        ),
        BOT,
    )
    assert not command.mentions_bot
    ours = to_incoming(
        _message(
            "/ask@Qwen_Test_Bot hi", entities=[{"type": "bot_command", "offset": 0, "length": 18}]
        ),
        BOT,
    )
    assert ours.mentions_bot and ours.text == "/ask@Qwen_Test_Bot hi"


def test_replies_and_topics() -> None:
    to_bot = to_incoming(
        _message(
            "why?",
            reply_to_message={
                "message_id": 2,
                "date": 0,
                "text": "because",
                "chat": {"id": -100, "type": "supergroup"},
                "from": BOT_USER,
            },
        ),
        BOT,
    )
    assert to_bot.reply_to is not None and to_bot.reply_to.from_bot and to_bot.addressed_to_bot
    in_topic = to_incoming(
        _message(
            "hi",
            message_thread_id=9,
            is_topic_message=True,
            reply_to_message={
                "message_id": 9,
                "date": 0,
                "chat": {"id": -100, "type": "supergroup"},
                "forum_topic_created": {"name": "t", "icon_color": 1},
            },
        ),
        BOT,
    )
    assert in_topic.thread_id == 9 and in_topic.reply_to is None
    assert in_topic.conversation_key != to_bot.conversation_key
