"""Discord messages in, IncomingMessage out: mentions, reply chains, threads, admin roles."""

from __future__ import annotations

import logging
import re

import discord

from adapters.discord_render import without_footer
from bot.messages import IncomingMessage, ReplyContext

log = logging.getLogger(__name__)

PLATFORM = "discord"


def strip_mention(content: str, bot_id: int) -> str:
    """The text without the bot's own <@id> / <@!id> mention."""
    return re.sub(rf"<@!?{bot_id}>", " ", content).strip()


def addresses_bot(message: discord.Message, bot: discord.ClientUser) -> bool:
    """DMs always; in servers an @mention of the bot (not @everyone) or a reply to the bot."""
    if message.guild is None:
        return True
    if any(user.id == bot.id for user in message.mentions):
        return True
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    return isinstance(resolved, discord.Message) and resolved.author.id == bot.id


async def _referenced(message: discord.Message) -> discord.Message | None:
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    if isinstance(reference.resolved, discord.Message):
        return reference.resolved
    if isinstance(reference.resolved, discord.DeletedReferencedMessage):
        return None
    try:
        return await message.channel.fetch_message(reference.message_id)
    except discord.HTTPException as error:  # deleted, or no access: the chain ends here
        log.debug("reply chain stops at %s: %s", reference.message_id, error)
        return None


async def reply_chain(
    message: discord.Message, bot_id: int, limit: int
) -> tuple[ReplyContext, ...]:
    """The messages this one replies to, oldest first, at most `limit` (the service then trims
    them to the token budget)."""
    chain: list[ReplyContext] = []
    current = message
    while len(chain) < limit and (previous := await _referenced(current)) is not None:
        from_bot = previous.author.id == bot_id
        text = (
            without_footer(previous.content)
            if from_bot
            else strip_mention(previous.content, bot_id)
        )
        chain.append(ReplyContext(text=text, from_bot=from_bot))
        current = previous
    return tuple(reversed(chain))


def has_admin_role(author: discord.abc.User, role_ids: frozenset[int]) -> bool:
    """True when a server member holds one of the configured admin roles."""
    roles = getattr(author, "roles", ())
    return any(role.id in role_ids for role in roles)


async def to_incoming(
    message: discord.Message, bot: discord.ClientUser, chain_limit: int, admin_roles: frozenset[int]
) -> IncomingMessage:
    """The platform-free form of a Discord message (its channel or thread is the chat)."""
    chain = await reply_chain(message, bot.id, chain_limit)
    return IncomingMessage(
        platform=PLATFORM,
        chat_id=message.channel.id,  # a thread is a channel: its history is its own
        user_id=message.author.id,
        user_name=message.author.display_name,
        text=strip_mention(message.content, bot.id),
        is_private=message.guild is None,
        mentions_bot=any(user.id == bot.id for user in message.mentions),
        reply_to=chain[-1] if chain else None,
        reply_chain=chain,
        platform_admin=has_admin_role(message.author, admin_roles),
        language=message_language(message),
    )


def message_language(message: discord.Message) -> str | None:
    """A message carries no language of its own: its server's preferred locale (set by
    the server's admins); None in DMs."""
    return message.guild.preferred_locale.value if message.guild is not None else None
