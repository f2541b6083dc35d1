"""Discord on discord.py: mentions, DMs and slash commands in, streamed replies out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from adapters.discord_controls import PREFIX, DiscordButtons, DiscordControls
from adapters.discord_files import with_attachments
from adapters.discord_messages import (
    PLATFORM,
    addresses_bot,
    has_admin_role,
    message_language,
    to_incoming,
)
from adapters.discord_render import NO_PINGS, DiscordReplyRenderer
from adapters.discord_replay import chat_key, message_key, replay_pending
from adapters.shutdown import finish_or_cancel
from bot import formatting
from bot.commands import command_descriptions
from bot.i18n import DEFAULT_LANGUAGE, language_of, translator
from bot.inbox import Journal
from bot.messages import IncomingMessage, Notice
from bot.service import ChatService
from bot.settings import DiscordSettings

log = logging.getLogger(__name__)

SLASH_COMMANDS = ("help", "reset", "stats")


class CatalogTranslator(app_commands.Translator):
    """Slash commands' descriptions in every language with a catalog, through discord.py's
    own localisation (Discord shows each user the one for their client's language)."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """The catalog's text for this locale, or None (Discord then shows the English)."""
        language = language_of(locale.value)
        if language is None or language == DEFAULT_LANGUAGE:
            return None
        return translator(language).gettext(string.message)


class QwenDiscordBot(commands.Bot):
    """The discord.py client: setup in setup_hook, one reply task per answered message."""

    def __init__(
        self, service: ChatService, settings: DiscordSettings, inbox: Journal, **options: Any
    ) -> None:
        # A text bot: no voice, so no start-up warnings about voice libraries it never needs.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the Developer Portal
        super().__init__(
            command_prefix=commands.when_mentioned,  # no text commands; slash commands only
            intents=intents,
            allowed_mentions=NO_PINGS,
            help_command=None,
            **options,  # discord.Client options, e.g. guild_ready_timeout
        )
        self._service = service
        self._settings = settings
        self._inbox = inbox
        self.replies: dict[int, asyncio.Task[Any]] = {}  # user message id -> its reply
        self.controls = DiscordControls(service, self.answer_again)
        self._replay: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        """Register the slash commands and sync them (one server: instant; global: slow)."""
        await self.tree.set_translator(CatalogTranslator())
        for name in SLASH_COMMANDS:
            self.tree.add_command(self._slash_command(name))
        self.tree.error(self._on_app_command_error)  # the one handler for slash commands
        guild = discord.Object(self._settings.guild_id) if self._settings.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        where = f"server {self._settings.guild_id}" if guild else "all servers (can take an hour)"
        log.info("synced %d slash commands to %s", len(synced), where)
        # Logged in, not yet connected: messages taken before a restart start first.
        self._replay = asyncio.create_task(self._replay_owed())

    async def _replay_owed(self) -> None:
        """Messages owed from before the restart; in a fleet sharing a Redis, then those a
        process that died still owes, as they are found."""
        while True:
            await replay_pending(self, self.answer, self._inbox, self._service)
            if self._inbox.sweep_s is None:
                return
            await asyncio.sleep(self._inbox.sweep_s)

    def _slash_command(self, name: str) -> app_commands.Command[Any, Any, None]:
        async def callback(interaction: discord.Interaction) -> None:
            await self._answer_command(interaction, name)

        english = command_descriptions(translator(DEFAULT_LANGUAGE))[name]
        return app_commands.Command(
            name=name, description=app_commands.locale_str(english), callback=callback
        )

    async def _answer_command(self, interaction: discord.Interaction, name: str) -> None:
        """Slash commands answer privately (ephemeral), so channels stay clean."""
        channel_id = interaction.channel_id or interaction.user.id
        incoming = IncomingMessage(
            platform=PLATFORM,
            chat_id=channel_id,
            user_id=interaction.user.id,
            user_name=interaction.user.display_name,
            text=f"/{name}",
            is_private=interaction.guild is None,
            mentions_bot=True,
            platform_admin=has_admin_role(interaction.user, self._settings.admin_role_ids),
            language=interaction.locale.value,  # the user's own client language
        )
        texts = [e.text async for e in self._service.handle(incoming) if isinstance(e, Notice)]
        apology = formatting.apology(self._service.translator(incoming))
        await interaction.response.send_message(
            "\n".join(texts) or apology, ephemeral=True, allowed_mentions=NO_PINGS
        )

    async def on_message(self, message: discord.Message) -> None:
        """Answer DMs, mentions and replies to the bot; never bots, never ourselves."""
        me = self.user
        if me is None or message.author.bot or not addresses_bot(message, me):
            return
        taken = {"channel_id": message.channel.id, "message_id": message.id}
        key = message_key(me.id, message.id)
        if not self._inbox.receive(key, chat_key(message.channel.id), taken):
            log.info("message %d delivered again; ignored", message.id)
            return
        await self.answer(message)

    async def answer(self, message: discord.Message) -> None:
        """Answer a message that is in the inbox; done there once answered (a failure too:
        its apology is the answer). A cancelled answer (a shutdown) stays to do."""
        me = self.user
        task = asyncio.current_task()
        if me is None or task is None:
            return
        self.replies[message.id] = task
        key = message_key(me.id, message.id)
        try:
            incoming = await to_incoming(
                message, me, self._settings.max_reply_chain, self._settings.admin_role_ids
            )
            read = await with_attachments(message, incoming, self._service)
            if isinstance(read, str):  # a file refused: the reason is the answer
                await message.reply(read, mention_author=False, allowed_mentions=NO_PINGS)
                self._inbox.done(key)  # (the else clause does not run on a return)
                return
            await self._reply(message, read, lambda posted: self._inbox.posted(key, posted))
        except Exception:
            self._inbox.done(key)  # its apology (on_error) is the answer
            raise
        else:
            self._inbox.done(key)
        finally:
            self.replies.pop(message.id, None)

    async def _reply(
        self,
        message: discord.Message,
        incoming: IncomingMessage,
        on_posted: Callable[[int], None] | None = None,
    ) -> None:
        """Render the answer to `incoming` under `message`, with Stop and Retry."""
        t = self._service.translator(incoming)
        live = self.controls.replies.start(incoming, message)
        renderer = DiscordReplyRenderer(
            message,
            interval_s=self._settings.edit_interval_s,
            on_posted=on_posted,
            translator=t,
            buttons=DiscordButtons.of(live, t),
        )
        try:
            await renderer.render(self._service.handle(incoming))
        finally:
            live.running = False

    async def answer_again(self, message: discord.Message, incoming: IncomingMessage) -> None:
        """A retried answer (not journaled: a press is not owed an answer after a crash)."""
        task = asyncio.current_task()
        if task is not None:
            self.replies[message.id] = task  # a shutdown lets it finish or cancels it
        try:
            await self._reply(message, incoming)
        finally:
            self.replies.pop(message.id, None)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Our buttons' presses (slash commands go through the command tree)."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if custom_id.startswith(PREFIX):
            await self.controls.on_press(interaction, custom_id)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """A question deleted while its answer is written: stop the answer, post nothing."""
        if self.user is not None:  # deleted: never answered later
            self._inbox.done(message_key(self.user.id, payload.message_id))
        task = self.replies.get(payload.message_id)
        if task is not None:
            log.info("message %d deleted; cancelling its reply", payload.message_id)
            task.cancel()

    async def stop_replay(self) -> None:
        """Stop answering messages from before the restart (those left stay to do)."""
        if self._replay is not None and not self._replay.done():
            self._replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """The one place event errors end: logged, and the asker gets a short apology."""
        log.exception("discord event %s failed", event_method)
        message = args[0] if args and isinstance(args[0], discord.Message) else None
        if message is not None:
            apology = formatting.apology(self._service.translator_for(message_language(message)))
            with contextlib.suppress(discord.HTTPException):
                await message.channel.send(apology, allowed_mentions=NO_PINGS)

    async def _on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        log.error("slash command failed: %s", error, exc_info=error)
        apology = formatting.apology(self._service.translator_for(interaction.locale.value))
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(apology, ephemeral=True)
            else:
                await interaction.response.send_message(apology, ephemeral=True)


class ShardedQwenDiscordBot(QwenDiscordBot, commands.AutoShardedBot):
    """The same bot on discord.py's AutoShardedBot: one gateway connection per shard, for a
    bot in more servers than one connection may serve (Discord asks from 2,500 on)."""


class DiscordAdapter:
    """Runs the Discord bot until told to stop."""

    def __init__(
        self, service: ChatService, settings: DiscordSettings, inbox: Journal, **options: Any
    ) -> None:
        if settings.token is None:
            raise ValueError("DISCORD__TOKEN is not set")
        self._settings = settings
        if settings.shard_count is None:
            self.bot = QwenDiscordBot(service, settings, inbox, **options)
            return
        # Several processes, each its shard ids (DISCORD__SHARD_IDS), make one bot: their
        # state (history, limits, inbox) is shared through Redis (STATE__REDIS_URL).
        shards = {
            "shard_count": settings.shard_count,
            "shard_ids": list(settings.shard_ids) or None,
        }
        self.bot = ShardedQwenDiscordBot(service, settings, inbox, **shards, **options)

    async def run(self, stop: asyncio.Event) -> None:
        """Log in, serve until `stop` is set, then let replies finish and close."""
        token = self._settings.token.get_secret_value() if self._settings.token else ""
        async with self.bot:
            serving = asyncio.create_task(self.bot.start(token))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if serving.done():
                serving.result()  # a failed login or a fatal gateway error surfaces here
                return
            await finish_or_cancel(self.bot.replies.values(), self._settings.shutdown_grace_s)
            await self.bot.stop_replay()
            await self.bot.close()
            await serving
