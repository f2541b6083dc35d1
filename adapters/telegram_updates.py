"""Telegram updates in, IncomingMessage out: mentions, replies, topics, captions."""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from typing import Any

from telegram import Message, MessageEntity, Update, User
from telegram.constants import ChatType
from telegram.ext import BaseUpdateProcessor

from adapters.telegram_controls import is_control
from adapters.telegram_paste import PasteJoiner
from bot.inbox import Journal
from bot.messages import IncomingMessage, ReplyContext

log = logging.getLogger(__name__)

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
        language=user.language_code if user else None,
    )


def joined(parts: list[Message], bot: User) -> IncomingMessage:
    """A message split by the app (one part, usually) as one: the parts' texts, each without
    the bot's mention, a line apart; addressed to the bot when any part is."""
    pieces = [to_incoming(part, bot) for part in parts]
    if len(pieces) == 1:
        return pieces[0]
    return replace(
        pieces[0],
        text="\n".join(piece.text for piece in pieces),
        mentions_bot=any(piece.mentions_bot for piece in pieces),
    )


class JournalingQueue(asyncio.Queue[object]):
    """PTB's update queue, writing each update to the inbox before it is queued.

    The updater puts an update here before it asks Telegram for the next ones (which tells
    Telegram this one was received), and the webhook server before it answers 200: so an
    update Telegram will not send again is always on disk first. An update taken before
    (a redelivery) is dropped here, so it is answered once.
    """

    def __init__(self, inbox: Journal) -> None:
        super().__init__()
        self._inbox = inbox
        # Update ids count per bot: two bots sharing a state folder must not collide.
        self.bot_id = 0  # set once the bot is known (getMe), before any update arrives

    @property
    def prefix(self) -> str:
        """The start of this bot's keys in the inbox journal."""
        return f"{PLATFORM}:{self.bot_id}:"

    def key(self, update_id: int) -> str:
        """An update's key in the inbox journal."""
        return f"{self.prefix}{update_id}"

    def put_nowait(self, item: object) -> None:
        """Journal an update, then queue it (`put` ends here too)."""
        if isinstance(item, Update) and not is_control(item):
            chat = item.effective_chat
            chat_key = f"{PLATFORM}:{chat.id if chat else 0}"
            if not self._inbox.receive(self.key(item.update_id), chat_key, item.to_dict()):
                log.info("update %d delivered again; ignored", item.update_id)
                return
        super().put_nowait(item)

    def put_replayed(self, update: Update) -> None:
        """Queue an update taken before a restart (it is in the journal already)."""
        super().put_nowait(update)


class PerChatOrder(BaseUpdateProcessor):
    """Different chats are served at once; updates of one chat run one after another, in the
    order they arrived, so its replies (and its history) never interleave."""

    def __init__(
        self,
        max_concurrent_updates: int,
        inbox: Journal,
        keys: JournalingQueue,
        pastes: PasteJoiner | None = None,
    ) -> None:
        super().__init__(max_concurrent_updates)
        self._inbox = inbox
        self._keys = keys
        self._pastes = pastes or PasteJoiner(0.0)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the handlers of one update behind its chat's lock; then it is done in the
        inbox. A cancelled update (a shutdown) stays to do, and is answered after the
        restart; an update whose handler failed has had its apology and is done."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if is_control(update):  # about the reply in progress: not behind it, not journaled
            await coroutine
            return
        key = self._keys.key(update.update_id) if isinstance(update, Update) else ""
        if self._pastes.arrive(update, key):
            # A later part of a paste: its first part's handler reads it, and it is done in
            # the journal with that one. Its own handling never runs.
            if isinstance(coroutine, Coroutine):
                coroutine.close()
            return
        if chat is None:
            await coroutine
        else:
            lock = self._locks.setdefault(chat.id, asyncio.Lock())
            async with lock:
                await coroutine
        if isinstance(update, Update):
            self._inbox.done(key)
            for part in self._pastes.finished(update):
                self._inbox.done(part)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to tear down."""
