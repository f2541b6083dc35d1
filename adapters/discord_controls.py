"""Stop and Retry under Discord answers, as message components (see telegram_controls.py
for what they do). The views are never kept by discord.py (stopped before they are sent):
every press comes to on_interaction, so a press after a restart is told it has expired."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import discord

from adapters.live_replies import LiveReplies, LiveReply
from bot import formatting
from bot.i18n import Translator
from bot.messages import IncomingMessage
from bot.service import ChatService

PREFIX = "qwenbot:"  # our buttons' custom ids: qwenbot:stop:<reply id>, qwenbot:retry:<id>
STOP, RETRY = "stop", "retry"


def _view(label: str, custom_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label=label, custom_id=custom_id))
    view.stop()  # finished: sent as components, not kept in discord.py's view store
    return view


@dataclass(frozen=True)
class DiscordButtons:
    """A reply's Stop view while it is written, its Retry view once done, and the event a
    Stop press sets."""

    streaming: discord.ui.View
    finished: discord.ui.View
    stop: asyncio.Event

    @classmethod
    def of(cls, reply: LiveReply[discord.Message], t: Translator) -> DiscordButtons:
        """The buttons of a reply, labelled in its asker's language."""
        stop_label, retry_label = formatting.button_labels(t)
        return cls(
            _view(stop_label, f"{PREFIX}{STOP}:{reply.reply_id}"),
            _view(retry_label, f"{PREFIX}{RETRY}:{reply.reply_id}"),
            reply.stop,
        )


AnswerAgain = Callable[[discord.Message, IncomingMessage], Awaitable[None]]


class DiscordControls:
    """What a button press does."""

    def __init__(self, service: ChatService, answer_again: AnswerAgain) -> None:
        self.replies: LiveReplies[discord.Message] = LiveReplies()
        self._service = service
        self._answer_again = answer_again  # the bot's way to answer a message once more

    async def on_press(self, interaction: discord.Interaction, custom_id: str) -> None:
        """Stop or Retry pressed: only by the asker, only while the reply is remembered."""
        t = self._service.translator_for(interaction.locale.value)
        action, _, reply_id = custom_id.removeprefix(PREFIX).partition(":")
        reply = self.replies.get(reply_id)
        if reply is None or (action == RETRY and not self.replies.is_latest(reply)):
            await interaction.response.send_message(formatting.button_expired(t), ephemeral=True)
            return
        if interaction.user.id != reply.asker:
            await interaction.response.send_message(formatting.not_your_button(t), ephemeral=True)
            return
        retry = action == RETRY and not reply.running
        # Claimed before any wait: a second press (a double click) retries nothing.
        reply.running = reply.running or retry
        await interaction.response.defer()  # the message changes by our own edits
        if action == STOP:
            reply.stop.set()
        elif retry:
            if interaction.message is not None:
                with contextlib.suppress(discord.HTTPException):  # the old answer: no button
                    await interaction.message.edit(view=None)
            await self._answer_again(reply.target, replace(reply.question, retry=True))
