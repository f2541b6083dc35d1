"""Render one reply's events in a Discord channel: typing, queue position, edits, final text.

One reply message is edited as text arrives, no more often than the configured interval and
only when its text changed (Discord allows about 5 messages or edits per 5 s per channel).
Replies longer than 2000 characters continue in further messages. Nothing the model writes
can ping anyone: every message goes out with all mentions disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

import discord

from adapters.discord_controls import DiscordButtons
from adapters.stoppable import show_until_stopped
from bot import formatting
from bot.i18n import Translator, translator_for
from bot.messages import Notice, QueuePosition, Reading, ReplyDone, ReplyEvent, ReplyText
from bot.splitting import split_message

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
NO_PINGS = discord.AllowedMentions.none()
FOOTER_SEPARATOR = "\n\n-# "  # the speed line goes under the reply as Discord's small text


def without_footer(text: str) -> str:
    """A reply of ours as the model wrote it (read back when walking a reply chain)."""
    body, separator, footer = text.rpartition(FOOTER_SEPARATOR)
    return body if separator and footer.startswith("⚡") else text


def split_for_discord(text: str) -> list[str]:
    """Message-sized parts, code fences closed and reopened."""
    return split_message(text, MESSAGE_LIMIT)


class DiscordReplyRenderer:
    """Consumes reply events for one user message and keeps the channel up to date."""

    def __init__(
        self,
        source: discord.Message,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_posted: Callable[[int], None] | None = None,
        translator: Translator | None = None,
        buttons: DiscordButtons | None = None,
    ) -> None:
        self._source = source
        self._buttons = buttons  # Stop and Retry, for answers their asker may act on
        self._t = translator or translator_for(None)  # statuses in the asker's language
        self._on_posted = on_posted  # told each message id posted, as soon as it is posted
        self._interval = interval_s
        self._clock = clock
        self._text = ""
        self._messages: list[discord.Message] = []
        self._shown: list[str] = []
        self._views: list[discord.ui.View | None] = []  # the buttons under each message
        self._last_update = float("-inf")
        self._posting: asyncio.Future[discord.Message] | None = None

    async def render(self, events: AsyncGenerator[ReplyEvent, None]) -> None:
        """Show every event of one reply; on cancellation, take back what was posted."""
        async with contextlib.AsyncExitStack() as typing:
            # discord.py refreshes the typing indicator until this context is closed.
            await typing.enter_async_context(self._source.channel.typing())

            async def show(event: ReplyEvent) -> None:
                if not isinstance(event, QueuePosition | Reading):
                    await typing.aclose()  # text (or a notice) is here
                await self._show(event)

            try:
                async with contextlib.aclosing(events):
                    stop = self._buttons.stop if self._buttons is not None else None
                    stopped = await show_until_stopped(events, show, stop)
                if stopped:
                    await typing.aclose()
                    text, mark = self._text.strip(), formatting.stopped(self._t)
                    final = f"{text}{FOOTER_SEPARATOR}{mark}" if text else mark
                    await self._sync(split_for_discord(final), self._view(True))
            except asyncio.CancelledError:
                await asyncio.shield(self._retract())  # question deleted: no orphan answer
                raise

    async def _show(self, event: ReplyEvent) -> None:
        if isinstance(event, QueuePosition):
            await self._status(formatting.queued(self._t, event.ahead, event.wait_s))
        elif isinstance(event, Reading):
            await self._status(formatting.reading(self._t, event.tokens))
        elif isinstance(event, ReplyText):
            self._text += event.text
            if self._clock() - self._last_update >= self._interval:
                await self._sync(split_for_discord(self._text), self._view(False))
                # From the end of the edit: a slow API slows the updates, never multiplies them.
                self._last_update = self._clock()
        elif isinstance(event, ReplyDone):
            final = event.text if not event.footer else event.text + FOOTER_SEPARATOR + event.footer
            await self._sync(split_for_discord(final), self._view(True))
        elif isinstance(event, Notice):
            await self._sync(split_for_discord(event.text))

    async def _status(self, text: str) -> None:
        """A status line, paced like the text (in a crowd the queue moves every moment)."""
        if self._messages and self._clock() - self._last_update < self._interval:
            return
        await self._sync([text], self._view(False))
        self._last_update = self._clock()

    def _view(self, final: bool) -> discord.ui.View | None:
        """Stop while the answer is written, Retry once it is done; none without buttons."""
        if self._buttons is None:
            return None
        return self._buttons.finished if final else self._buttons.streaming

    async def _sync(self, parts: list[str], view: discord.ui.View | None = None) -> None:
        """Make the channel show `parts`: edit what was sent when it changed (or when its
        buttons did), send the rest; the buttons go under the last part only."""
        for index, part in enumerate(parts):
            buttons = view if index == len(parts) - 1 else None
            if index < len(self._messages):
                if self._shown[index] != part or self._views[index] is not buttons:
                    await self._messages[index].edit(
                        content=part, allowed_mentions=NO_PINGS, view=buttons
                    )
            else:
                extra: dict[str, Any] = {"view": buttons} if buttons is not None else {}
                if index == 0:
                    posting = self._source.reply(
                        part, mention_author=False, allowed_mentions=NO_PINGS, **extra
                    )
                else:
                    posting = self._source.channel.send(part, allowed_mentions=NO_PINGS, **extra)
                await self._post(posting)
            self._shown[index : index + 1] = [part]
            self._views[index : index + 1] = [buttons]

    async def _post(self, send: Coroutine[Any, Any, discord.Message]) -> None:
        """Post one message; a cancellation mid-post lets it finish, so it can be taken back."""
        # Discord has the message once it got the request: cancelling the wait for its answer
        # would leave a message we never learn the id of, so it could never be deleted.
        self._posting = asyncio.ensure_future(send)
        message = await asyncio.shield(self._posting)
        self._messages.append(message)
        self._posting = None
        if self._on_posted is not None:
            self._on_posted(message.id)

    async def _retract(self) -> None:
        if self._posting is not None:  # cancelled while a message was being posted
            with contextlib.suppress(discord.HTTPException):
                self._messages.append(await self._posting)
        for message in self._messages:
            with contextlib.suppress(discord.HTTPException):
                await message.delete()
        self._messages.clear()
