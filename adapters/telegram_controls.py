"""Stop and Retry under Telegram answers: the replies the buttons (and /stop) act on.

A reply in progress carries a Stop button (on the message it is streamed into; private chats
streamed as drafts have no message until the end, so there /stop does it); a finished or
stopped answer carries Retry, which answers the same question again, sampled afresh, in
place of the old answer in the history. Only the asker may press them. The buttons are
this process's memory: after a restart, or once a newer answer came in the chat, a press
is told the button has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from adapters.telegram_render import ReplyTarget
from bot import formatting
from bot.commands import parse_command
from bot.i18n import Translator
from bot.messages import IncomingMessage
from bot.service import ChatService

STOP, RETRY = "stop", "retry"
REMEMBERED = 1024  # replies kept for their buttons, the oldest forgotten first


@dataclass
class LiveReply:
    """One answer the buttons act on."""

    reply_id: str
    question: IncomingMessage
    target: ReplyTarget  # where the answer went: a retry's goes there too
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = True

    @property
    def asker(self) -> int:
        """The only user whose presses count."""
        return self.question.user_id


@dataclass(frozen=True)
class ReplyButtons:
    """What a renderer shows: Stop while the answer is written, Retry once it is done; and
    the event a Stop press sets."""

    streaming: InlineKeyboardMarkup
    finished: InlineKeyboardMarkup
    stop: asyncio.Event

    @classmethod
    def of(cls, reply: LiveReply, t: Translator) -> ReplyButtons:
        """The buttons of a reply, labelled in its asker's language."""
        stop_label, retry_label = formatting.button_labels(t)
        stop = InlineKeyboardButton(stop_label, callback_data=f"{STOP}:{reply.reply_id}")
        retry = InlineKeyboardButton(retry_label, callback_data=f"{RETRY}:{reply.reply_id}")
        return cls(InlineKeyboardMarkup([[stop]]), InlineKeyboardMarkup([[retry]]), reply.stop)


class LiveReplies:
    """The replies of this process that buttons may still act on."""

    def __init__(self) -> None:
        self._replies: OrderedDict[str, LiveReply] = OrderedDict()
        self._latest: dict[str, str] = {}  # conversation -> its newest reply's id

    def start(self, question: IncomingMessage, target: ReplyTarget) -> LiveReply:
        """A new reply to `question`; it becomes its conversation's newest."""
        reply = LiveReply(secrets.token_hex(6), question, target)
        self._replies[reply.reply_id] = reply
        self._latest[question.conversation_key] = reply.reply_id
        while len(self._replies) > REMEMBERED:
            _, oldest = self._replies.popitem(last=False)
            if self._latest.get(oldest.question.conversation_key) == oldest.reply_id:
                del self._latest[oldest.question.conversation_key]
        return reply

    def get(self, reply_id: str) -> LiveReply | None:
        """A reply by its buttons' id; None once forgotten (or from before a restart)."""
        return self._replies.get(reply_id)

    def is_latest(self, reply: LiveReply) -> bool:
        """Whether no newer reply came in its conversation (only the newest is retried)."""
        return self._latest.get(reply.question.conversation_key) == reply.reply_id

    def running_for(self, chat_id: int, user_id: int) -> LiveReply | None:
        """The newest reply being written for this user in this chat (what /stop stops)."""
        for reply in reversed(self._replies.values()):
            if reply.running and reply.question.chat_id == chat_id and reply.asker == user_id:
                return reply
        return None


def is_control(update: object) -> bool:
    """A button press or /stop: acted on at once, not queued behind the chat's reply in
    progress (which it is about), and not journaled (nothing is owed to it after a crash)."""
    if not isinstance(update, Update):
        return False
    if update.callback_query is not None:
        return True
    message = update.message
    command = parse_command(message.text) if message is not None and message.text else None
    return command is not None and command.name == STOP


ReplyAgain = Callable[[Bot, IncomingMessage, ReplyTarget], Awaitable[None]]


class ReplyControls:
    """The handlers of button presses and /stop."""

    def __init__(self, service: ChatService, reply_again: ReplyAgain) -> None:
        self.replies = LiveReplies()
        self._service = service
        self._reply_again = reply_again  # the adapter's way to answer a message

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Stop or Retry pressed: only by the asker, only while the reply is remembered."""
        query = update.callback_query
        if query is None:
            return
        t = self._service.translator_for(query.from_user.language_code)
        action, _, reply_id = (query.data or "").partition(":")
        reply = self.replies.get(reply_id)
        if reply is None or (action == RETRY and not self.replies.is_latest(reply)):
            await query.answer(formatting.button_expired(t))
            return
        if query.from_user.id != reply.asker:
            await query.answer(formatting.not_your_button(t))
            return
        await query.answer()
        if action == STOP:
            reply.stop.set()
        elif action == RETRY and not reply.running:
            with contextlib.suppress(TelegramError):  # the old answer keeps no button
                await query.edit_message_reply_markup(None)
            retried = replace(reply.question, retry=True)
            await self._reply_again(context.bot, retried, replace(reply.target, quote=True))

    async def on_stop(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/stop: the asker's reply in progress in this chat stops (in private chats streamed
        as drafts this is the way: a draft carries no button)."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        reply = self.replies.running_for(message.chat_id, user.id)
        if reply is not None:
            reply.stop.set()
        elif message.chat.type == ChatType.PRIVATE:  # in a group it may be another bot's
            t = self._service.translator_for(user.language_code)
            await message.reply_text(formatting.nothing_to_stop(t))
