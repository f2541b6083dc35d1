"""Render one reply's events in a Telegram chat: typing, queue position, streaming, final text.

Private chats stream through sendMessageDraft (no flood limits; the draft is replaced by the
final message). Groups get one message that is edited as text arrives, no more often than
the configured interval and only when its text changed. Long replies become several
messages, each under Telegram's 4096 UTF-16 units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from telegram import Bot, InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ChatAction, MessageLimit, ParseMode
from telegram.error import BadRequest, TelegramError

from adapters.stoppable import show_until_stopped
from adapters.telegram_buttons import ReplyButtons
from adapters.telegram_delivery import deliver, is_parse_error, not_modified
from adapters.telegram_format import markdown_to_html
from bot import formatting
from bot.i18n import Translator, translator_for
from bot.messages import Notice, QueuePosition, Reading, ReplyDone, ReplyEvent, ReplyText
from bot.splitting import split_message, utf16_length

log = logging.getLogger(__name__)

TYPING_REFRESH_S = 4.0  # Telegram shows "typing" for about 5 s
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


@dataclass(frozen=True)
class ReplyTarget:
    """Where the reply goes."""

    chat_id: int
    thread_id: int | None  # forum topic
    reply_to_message_id: int | None  # quoted in groups, so the asker sees it is for them
    private: bool
    quote: bool = False  # quote the question in a private chat too (an answer after a restart)


def split_for_telegram(text: str) -> list[str]:
    """Message-sized parts (UTF-16 units, code fences closed and reopened)."""
    return split_message(text, MessageLimit.MAX_TEXT_LENGTH, utf16_length)


class TelegramReplyRenderer:
    """Consumes reply events and keeps the chat showing the right thing at each moment."""

    def __init__(
        self,
        bot: Bot,
        target: ReplyTarget,
        *,
        use_drafts: bool,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_posted: Callable[[int], None] | None = None,
        translator: Translator | None = None,
        buttons: ReplyButtons | None = None,
    ) -> None:
        self._bot = bot
        self._buttons = buttons  # Stop and Retry, for answers their asker may act on
        self._t = translator or translator_for(None)  # statuses in the asker's language
        self._on_posted = on_posted  # told each message id sent, as soon as it is sent
        self._target = target
        self._drafts = use_drafts and target.private
        self._interval = interval_s
        self._clock = clock
        self._draft_id = random.randint(1, 2**31 - 1)
        self._text = ""
        self._messages: list[Message] = []
        self._shown: list[str] = []
        self._last_update = float("-inf")
        self._status_shown = False
        self._text_started = asyncio.Event()

    async def render(self, events: AsyncGenerator[ReplyEvent, None]) -> None:
        """Show every event of one reply; returns when the reply is delivered (or stopped:
        then the generation is cancelled and what was written stays, marked)."""
        typing = asyncio.create_task(self._keep_typing())
        try:
            async with contextlib.aclosing(events):
                stop = self._buttons.stop if self._buttons is not None else None
                stopped = await show_until_stopped(events, self._show, stop)
            if stopped:
                self._text_started.set()
                text, mark = self._text.strip(), formatting.stopped(self._t)
                final = f"{text}\n\n{mark}" if text else mark
                await self._sync(split_for_telegram(final), final=True, markup=self._markup(True))
        finally:
            self._text_started.set()
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing

    def _markup(self, final: bool) -> InlineKeyboardMarkup | None:
        """Stop while the answer is written, Retry once it is done; none without buttons."""
        if self._buttons is None:
            return None
        return self._buttons.finished if final else self._buttons.streaming

    async def _show(self, event: ReplyEvent) -> None:
        if isinstance(event, QueuePosition):
            await self._status(formatting.queued(self._t, event.ahead, event.wait_s))
        elif isinstance(event, Reading):
            await self._status(formatting.reading(self._t, event.tokens))
        elif isinstance(event, ReplyText):
            self._text_started.set()
            self._text += event.text
            if self._clock() - self._last_update >= self._interval:
                await self._stream()
        elif isinstance(event, ReplyDone):
            self._text_started.set()
            final = event.text if not event.footer else f"{event.text}\n\n{event.footer}"
            await self._sync(split_for_telegram(final), final=True, markup=self._markup(True))
        elif isinstance(event, Notice):
            self._text_started.set()
            await self._sync(split_for_telegram(event.text), final=True, formatted=False)

    async def _keep_typing(self) -> None:
        """The typing action until the first text, refreshed before Telegram lets it lapse."""
        while not self._text_started.is_set():
            with contextlib.suppress(TelegramError):  # a missed typing action costs nothing
                await self._bot.send_chat_action(
                    self._target.chat_id,
                    ChatAction.TYPING,
                    message_thread_id=self._target.thread_id,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._text_started.wait(), TYPING_REFRESH_S)

    async def _status(self, text: str) -> None:
        # Paced like the text: in a crowd the queue moves every moment, and an update per
        # move would spend the bot's request budget on statuses instead of answers.
        if self._status_shown and self._clock() - self._last_update < self._interval:
            return
        self._status_shown = True
        if self._drafts:
            await self._draft(text)
        else:
            await self._sync([text], final=False, markup=self._markup(False))
        self._last_update = self._clock()

    async def _stream(self) -> None:
        parts = split_for_telegram(self._text)
        if parts:
            if self._drafts:
                await self._draft(parts[-1])  # earlier parts arrive with the final messages
            else:
                await self._sync(parts, final=False, markup=self._markup(False))
        # Counted from the end of the send: when the API is slow (a rate limiter waiting),
        # updates slow down with it instead of one going out per token that arrived meanwhile.
        self._last_update = self._clock()

    async def _draft(self, text: str) -> None:
        # A draft is a preview: losing one to a network error or a limit costs nothing.
        with contextlib.suppress(TelegramError):
            await self._bot.send_message_draft(
                self._target.chat_id,
                self._draft_id,
                text,
                message_thread_id=self._target.thread_id,
            )

    async def _sync(
        self,
        parts: list[str],
        *,
        final: bool,
        formatted: bool = True,
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Make the chat show `parts`: edit the messages already sent, send the rest; the
        buttons go under the last part (an edit without them takes them off the others)."""
        html = final and formatted
        for index, part in enumerate(parts):
            buttons = markup if index == len(parts) - 1 else None
            if index < len(self._messages):
                if self._shown[index] != part or html:
                    await self._edit(index, part, html, buttons)
            else:
                message = await self._send(part, html, buttons)
                self._messages.append(message)
                if self._on_posted is not None:
                    self._on_posted(message.message_id)
            self._shown[index : index + 1] = [part]

    async def _send(self, text: str, html: bool, markup: InlineKeyboardMarkup | None) -> Message:
        target = self._target
        reply = (
            ReplyParameters(target.reply_to_message_id, allow_sending_without_reply=True)
            if target.reply_to_message_id is not None and (target.quote or not target.private)
            else None
        )

        async def send(body: str, parse_mode: str | None) -> Message:
            return await self._bot.send_message(
                target.chat_id,
                body,
                parse_mode=parse_mode,
                message_thread_id=target.thread_id,
                reply_parameters=reply,
                link_preview_options=_NO_PREVIEW,
                reply_markup=markup,
            )

        if html:
            try:
                return await deliver(lambda: send(markdown_to_html(text), ParseMode.HTML))
            except BadRequest as error:
                if not is_parse_error(error):
                    raise
                log.info("Telegram rejected the formatting (%s); sending plain text", error)
        return await deliver(lambda: send(text, None))

    async def _edit(
        self, index: int, text: str, html: bool, markup: InlineKeyboardMarkup | None
    ) -> None:
        message = self._messages[index]

        async def edit(body: str, parse_mode: str | None) -> None:
            await self._bot.edit_message_text(
                body,
                chat_id=message.chat_id,
                message_id=message.message_id,
                parse_mode=parse_mode,
                link_preview_options=_NO_PREVIEW,
                reply_markup=markup,
            )

        try:
            if html:
                try:
                    await deliver(lambda: edit(markdown_to_html(text), ParseMode.HTML))
                    return
                except BadRequest as error:
                    if not is_parse_error(error):
                        raise
                    log.info("Telegram rejected the formatting (%s); editing as plain", error)
            await deliver(lambda: edit(text, None))
        except BadRequest as error:
            if not not_modified(error):  # an identical edit is harmless
                raise
