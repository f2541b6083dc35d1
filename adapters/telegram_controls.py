"""Stop and Retry under Telegram answers: the replies the buttons (and /stop) act on.

A reply in progress carries a Stop button (on the message it is streamed into; private chats
streamed as drafts have no message until the end, so there /stop does it); a finished or
stopped answer carries Retry, which answers the same question again, sampled afresh, in
place of the old answer in the history. Only the asker may press them. The buttons are
this process's memory: after a restart, or once a newer answer came in the chat, a press
is told the button has expired.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace

from telegram import Bot, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from adapters.live_replies import LiveReplies
from adapters.telegram_buttons import RETRY, STOP
from adapters.telegram_render import ReplyTarget
from bot import formatting
from bot.commands import parse_command
from bot.messages import IncomingMessage
from bot.service import ChatService


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
        self.replies: LiveReplies[ReplyTarget] = LiveReplies()
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
        retry = action == RETRY and not reply.running
        # Claimed before any wait: a second press (a double click) retries nothing.
        reply.running = reply.running or retry
        await query.answer()
        if action == STOP:
            reply.stop.set()
        elif retry:
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
        command = parse_command(message.text or "")
        mine = context.bot.username.lower()
        if command is not None and command.target and command.target.lower() != mine:
            return  # /stop@otherbot
        reply = self.replies.running_for(message.chat_id, user.id)
        if reply is not None:
            reply.stop.set()
        elif message.chat.type == ChatType.PRIVATE:  # in a group it may be another bot's
            t = self._service.translator_for(user.language_code)
            await message.reply_text(formatting.nothing_to_stop(t))
