"""Telegram updates in, IncomingMessage out: mentions, replies, topics, captions."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections import deque
from collections.abc import Awaitable
from typing import Any

from telegram import Message, MessageEntity, Update, User
from telegram.constants import ChatType
from telegram.ext import BaseUpdateProcessor

from bot.messages import IncomingMessage, ReplyContext

PLATFORM = "telegram"


def _mentions(message: Message, bot: User) -> tuple[bool, str]:
    """Whether the message addresses the bot, and its text with the bot's @mention removed."""
    text = message.text or message.caption or ""
    entities = message.entities if message.text else message.caption_entities
    handle = f"@{bot.username}".lower() if bot.username else None
    mentioned = False
    cuts: list[tuple[int, int]] = []
    for entity in entities:
        fragment = (
            message.parse_entity(entity) if message.text else message.parse_caption_entity(entity)
        )
        if entity.type == MessageEntity.MENTION and handle and fragment.lower() == handle:
            mentioned = True
            cuts.append((entity.offset, entity.offset + entity.length))
        elif entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot.id:
            mentioned = True
        elif (
            entity.type == MessageEntity.BOT_COMMAND
            and handle
            and fragment.lower().endswith(handle)
        ):
            mentioned = True  # /ask@thisbot: the command itself says who it is for
    if cuts:
        # Entity offsets count UTF-16 units; cut on the UTF-16 form to stay exact.
        units = text.encode("utf-16-le")
        for start, end in sorted(cuts, reverse=True):
            units = units[: start * 2] + units[end * 2 :]
        text = units.decode("utf-16-le")
    return mentioned, re.sub(r"[ \t]{2,}", " ", text).strip()  # no gap where the @mention was


def _reply_context(message: Message, bot: User) -> ReplyContext | None:
    replied = message.reply_to_message
    # In forum topics every message "replies" to the topic's creation notice: not a reply.
    if replied is None or replied.forum_topic_created is not None:
        return None
    from_bot = replied.from_user is not None and replied.from_user.id == bot.id
    return ReplyContext(text=replied.text or replied.caption or "", from_bot=from_bot)


def to_incoming(message: Message, bot: User) -> IncomingMessage:
    """The platform-free form of a Telegram text (or captioned) message."""
    mentioned, text = _mentions(message, bot)
    user = message.from_user
    return IncomingMessage(
        platform=PLATFORM,
        chat_id=message.chat_id,
        user_id=user.id if user else message.chat_id,
        user_name=user.full_name if user else (message.chat.title or ""),
        text=text,
        is_private=message.chat.type == ChatType.PRIVATE,
        mentions_bot=mentioned,
        reply_to=_reply_context(message, bot),
        thread_id=message.message_thread_id if message.is_topic_message else None,
    )


class RecentUpdates:
    """Remembers the last update ids so a redelivered update is answered once."""

    def __init__(self, size: int = 10_000) -> None:
        self._order: deque[int] = deque(maxlen=size)
        self._seen: set[int] = set()

    def first_time(self, update_id: int) -> bool:
        """True the first time an id is seen."""
        if update_id in self._seen:
            return False
        if len(self._order) == self._order.maxlen:
            self._seen.discard(self._order[0])
        self._order.append(update_id)
        self._seen.add(update_id)
        return True


class PerChatOrder(BaseUpdateProcessor):
    """Different chats are served at once; updates of one chat run one after another, in the
    order they arrived, so its replies (and its history) never interleave."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the handlers of one update behind its chat's lock."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        lock = self._locks.setdefault(chat.id, asyncio.Lock())
        async with lock:
            await coroutine

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to tear down."""
