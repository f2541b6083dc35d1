"""The Stop and Retry buttons under a Telegram answer, as its renderer shows them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from adapters.live_replies import LiveReply
from bot import formatting
from bot.i18n import Translator

STOP, RETRY = "stop", "retry"  # callback_data: "<action>:<reply id>"


@dataclass(frozen=True)
class ReplyButtons:
    """What a renderer shows: Stop while the answer is written, Retry once it is done; and
    the event a Stop press sets."""

    streaming: InlineKeyboardMarkup
    finished: InlineKeyboardMarkup
    stop: asyncio.Event

    @classmethod
    def of(cls, reply: LiveReply[Any], t: Translator) -> ReplyButtons:
        """The buttons of a reply, labelled in its asker's language."""
        stop_label, retry_label = formatting.button_labels(t)
        stop = InlineKeyboardButton(stop_label, callback_data=f"{STOP}:{reply.reply_id}")
        retry = InlineKeyboardButton(retry_label, callback_data=f"{RETRY}:{reply.reply_id}")
        return cls(InlineKeyboardMarkup([[stop]]), InlineKeyboardMarkup([[retry]]), reply.stop)
