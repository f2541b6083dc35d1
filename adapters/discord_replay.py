"""Discord messages taken before a restart and never answered: answered now, each channel's
in the order they came. Discord never delivers a message twice, so the inbox is the only
record that a question is still owed an answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import discord

from adapters.discord_messages import PLATFORM, to_incoming
from adapters.discord_render import NO_PINGS
from bot import formatting
from bot.inbox import InboxEntry, Journal, Replay
from bot.service import ChatService

Answer = Callable[[discord.Message], Awaitable[None]]

log = logging.getLogger(__name__)


def key_prefix(bot_id: int) -> str:
    """The start of one bot's keys in the inbox journal (per bot: two bots in one channel
    sharing a state folder each owe their own answer)."""
    return f"{PLATFORM}:{bot_id}:"


def message_key(bot_id: int, message_id: int) -> str:
    """A message's key in the inbox journal."""
    return f"{key_prefix(bot_id)}{message_id}"


def chat_key(channel_id: int) -> str:
    """A channel's name in the inbox journal."""
    return f"{PLATFORM}:channel:{channel_id}"


async def replay_pending(
    bot: discord.Client, answer: Answer, inbox: Journal, service: ChatService
) -> None:
    """Answer (with `answer`; when too old, apologise) every message the inbox still owes."""
    if bot.user is None:
        return
    channels: defaultdict[str, list[InboxEntry]] = defaultdict(list)
    for entry in inbox.pending(key_prefix(bot.user.id)):
        channels[entry.chat].append(entry)
    if not channels:
        return
    owed = sum(len(entries) for entries in channels.values())
    log.info("answering %d messages taken before the restart", owed)
    await asyncio.gather(
        *(_replay_channel(bot, answer, inbox, service, e) for e in channels.values())
    )


async def _replay_channel(
    bot: discord.Client,
    answer: Answer,
    inbox: Journal,
    service: ChatService,
    entries: list[InboxEntry],
) -> None:
    for entry in entries:
        try:
            message = await _fetch(bot, entry)
        except discord.HTTPException as error:  # Discord is down: try again at the next start
            log.warning("could not fetch message %s to answer it: %s", entry.key, error)
            continue
        if message is None:  # deleted, or no longer readable: nobody is waiting for it
            inbox.done(entry.key)
            continue
        for posted in entry.sent:  # an interrupted answer's first words: taken back
            with contextlib.suppress(discord.HTTPException):
                await bot.http.delete_message(message.channel.id, posted)
        replay = inbox.replay(entry)
        if replay is Replay.ANSWER:
            try:
                await answer(message)
            except Exception:  # noqa: BLE001  the apology is the answer, as for a new message
                await bot.on_error("replay", message)
            continue
        if replay is Replay.APOLOGISE and bot.user is not None:
            incoming = await to_incoming(message, bot.user, 0, frozenset())
            if service.expects_answer(incoming):
                with contextlib.suppress(discord.HTTPException):
                    await message.reply(
                        formatting.restarted(service.translator(incoming)),
                        mention_author=False,
                        allowed_mentions=NO_PINGS,
                    )
        log.info("message from %.0f s ago was too old to answer now", entry.age_s)
        inbox.done(entry.key)


async def _fetch(bot: discord.Client, entry: InboxEntry) -> discord.Message | None:
    """The message an entry stands for; None when it is gone for good."""
    try:
        channel_id = int(entry.payload["channel_id"])
        message_id = int(entry.payload["message_id"])
    except (KeyError, TypeError, ValueError):
        log.warning("inbox entry %s is not a Discord message; dropped it", entry.key)
        return None
    try:
        channel = bot.get_channel(channel_id) or await bot.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return None
        return await channel.fetch_message(message_id)
    except (discord.NotFound, discord.Forbidden):
        return None
