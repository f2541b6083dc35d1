"""Telegram on python-telegram-bot: updates become IncomingMessage, reply events go back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from telegram import Bot, BotCommand, Update
from telegram.constants import ChatType, UpdateType
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseRateLimiter,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from adapters.shutdown import finish_or_cancel
from adapters.telegram_buttons import ReplyButtons
from adapters.telegram_controls import ReplyControls, is_control
from adapters.telegram_files import file_url_base, with_document
from adapters.telegram_paste import PasteJoiner
from adapters.telegram_render import ReplyTarget, TelegramReplyRenderer
from adapters.telegram_updates import JournalingQueue, PerChatOrder, joined, to_incoming
from bot import formatting
from bot.commands import COMMANDS, command_descriptions, parse_command
from bot.i18n import DEFAULT_LANGUAGE, Translator, available_languages, translator
from bot.inbox import Journal, Replay
from bot.messages import IncomingMessage
from bot.service import ChatService
from bot.settings import TelegramSettings

log = logging.getLogger(__name__)


class TelegramAdapter:
    """Owns the python-telegram-bot Application; one instance per bot token."""

    def __init__(
        self,
        service: ChatService,
        settings: TelegramSettings,
        inbox: Journal,
        rate_limiter: BaseRateLimiter[int] | None = None,
    ) -> None:
        if settings.token is None:
            raise ValueError("TELEGRAM__TOKEN is not set")
        self._service = service
        self._settings = settings
        self._inbox = inbox
        self._queue = JournalingQueue(inbox)
        # PTB's limiter keeps us under Telegram's flood limits and waits out 429 RetryAfter.
        self._rate_limiter = rate_limiter or AIORateLimiter(max_retries=5)
        self._replies: set[asyncio.Task[object]] = set()
        self._replayed: set[int] = set()  # update ids taken before a restart, answered now
        self._controls = ReplyControls(service, self._reply)
        self._pastes = PasteJoiner(settings.paste_join_s)
        self.application = self._build()

    def _build(self) -> Application:  # type: ignore[type-arg]
        token = self._settings.token.get_secret_value() if self._settings.token else ""
        application = (
            ApplicationBuilder()
            .token(token)
            .base_url(self._settings.base_url)
            .base_file_url(file_url_base(self._settings.base_url))
            .rate_limiter(self._rate_limiter)
            .update_queue(self._queue)
            .concurrent_updates(
                PerChatOrder(
                    self._settings.max_concurrent_updates, self._inbox, self._queue, self._pastes
                )
            )
            .build()
        )
        messages = filters.UpdateType.MESSAGE  # edited messages are not answered again
        application.add_handler(CallbackQueryHandler(self._controls.on_button))
        application.add_handler(
            MessageHandler(
                messages & (filters.TEXT | filters.CAPTION | filters.Document.ALL), self._on_text
            )
        )
        application.add_handler(
            MessageHandler(messages & filters.ChatType.PRIVATE, self._on_other_private)
        )
        application.add_error_handler(self._on_error)
        return application

    async def _set_command_menus(self) -> None:
        """The command menu in English for everyone, and in each catalog's language for
        users whose Telegram app is set to it."""
        bot = self.application.bot
        for language in available_languages():
            descriptions = command_descriptions(translator(language))
            await bot.set_my_commands(
                [BotCommand(name, descriptions[name]) for name in COMMANDS],
                language_code=None if language == DEFAULT_LANGUAGE else language,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down cleanly."""
        app = self.application
        async with app:  # initialize() ... shutdown()
            self._queue.bot_id = app.bot.id  # known now (getMe); no update has arrived yet
            await self._set_command_menus()
            await app.start()
            sweeping = None
            try:
                await self._replay_pending()  # before new updates: each chat keeps its order
                await self._start_receiving()
                log.info("telegram bot @%s serving (%s)", app.bot.username, self._settings.mode)
                if self._inbox.sweep_s is not None:
                    sweeping = asyncio.create_task(self._sweep(self._inbox.sweep_s))
                await stop.wait()
            finally:
                if sweeping is not None:
                    sweeping.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sweeping
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()  # no new updates from here on
                await finish_or_cancel(self._replies, self._settings.shutdown_grace_s)
                await app.stop()

    async def _start_receiving(self) -> None:
        """Long polling, or a webhook server that Telegram posts updates to."""
        updater = self.application.updater
        if updater is None:
            raise RuntimeError("the Telegram application was built without an updater")
        updates = [UpdateType.MESSAGE]  # edited messages are deliberately not answered again
        if self._settings.mode == "polling":
            await updater.start_polling(allowed_updates=updates)
            return
        secret = self._settings.webhook_secret
        await updater.start_webhook(
            listen=self._settings.webhook_listen,
            port=self._settings.webhook_port,
            url_path=self._settings.webhook_path,
            webhook_url=self._settings.webhook_url,
            secret_token=secret.get_secret_value() if secret else None,
            allowed_updates=updates,
        )

    async def _sweep(self, every_s: float) -> None:
        """A fleet sharing a Redis: answer what a process that died still owes."""
        while True:
            await asyncio.sleep(every_s)
            await self._replay_pending()

    async def _replay_pending(self) -> None:
        """Queue the updates taken before a restart and never answered, oldest first; too
        old ones get a short apology instead (Journal.replay)."""
        bot = self.application.bot
        replayed = 0
        for entry in self._inbox.pending(self._queue.prefix):
            try:
                update = Update.de_json(entry.payload, bot)
            except (KeyError, TypeError, ValueError) as error:
                log.warning("inbox entry %s is not an update (%s); dropped it", entry.key, error)
                self._inbox.done(entry.key)
                continue
            chat = update.effective_chat
            if chat is not None:  # an interrupted answer's first words: taken back
                for message_id in entry.sent:
                    with contextlib.suppress(TelegramError):
                        await bot.delete_message(chat.id, message_id)
            replay = self._inbox.replay(entry)
            if replay is Replay.ANSWER:
                self._replayed.add(update.update_id)
                self._queue.put_replayed(update)
                replayed += 1
                continue
            message = update.effective_message
            if (
                replay is Replay.APOLOGISE
                and message is not None
                and self._service.expects_answer(to_incoming(message, bot.bot))
            ):
                incoming = to_incoming(message, bot.bot)
                with contextlib.suppress(TelegramError):
                    t = self._service.translator(incoming)
                    await message.reply_text(formatting.restarted(t), do_quote=True)
            log.info("update from %.0f s ago was too old to answer now", entry.age_s)
            self._inbox.done(entry.key)
        if replayed:
            log.info("answering %d messages taken before the restart", replayed)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        if is_control(update):  # /stop (read from the text: PTB's CommandHandler needs entities)
            await self._controls.on_stop(update, context)
            return
        incoming = joined(await self._pastes.gather(update), context.bot.bot)
        if message.document is not None and self._service.expects_answer(incoming):
            read = await with_document(context.bot, message, incoming, self._service)
            if read is None:
                return  # refused, and told why
            incoming = read
        target = ReplyTarget(
            chat_id=message.chat_id,
            thread_id=incoming.thread_id,
            reply_to_message_id=message.message_id,
            private=incoming.is_private,
            # An answer after a restart quotes its question, even in a private chat.
            quote=update.update_id in self._replayed,
        )
        key = self._queue.key(update.update_id)
        await self._reply(
            context.bot, incoming, target, lambda message_id: self._inbox.posted(key, message_id)
        )
        self._replayed.discard(update.update_id)

    async def _reply(
        self,
        bot: Bot,
        incoming: IncomingMessage,
        target: ReplyTarget,
        on_posted: Callable[[int], None] | None = None,
    ) -> None:
        """Answer one message into `target`, with Stop and Retry where it is answered."""
        t = self._service.translator(incoming)
        live = None
        command = parse_command(incoming.text)
        if self._service.expects_answer(incoming) and (command is None or command.name == "ask"):
            # (a command's notice gets no buttons, and leaves the last answer's Retry alone)
            live = self._controls.replies.start(incoming, target)
        renderer = TelegramReplyRenderer(
            bot,
            target,
            use_drafts=self._settings.use_drafts,
            interval_s=self._settings.edit_interval_s
            if incoming.is_private
            else self._settings.group_edit_interval_s,
            on_posted=on_posted,
            translator=t,
            buttons=None if live is None else ReplyButtons.of(live, t),
        )
        task = asyncio.current_task()
        if task is not None:
            self._replies.add(task)
        try:
            await renderer.render(self._service.handle(incoming))
        finally:
            if task is not None:
                self._replies.discard(task)
            if live is not None:
                live.running = False

    async def _on_other_private(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Stickers, photos without a caption, voice: in private chats say what works."""
        chat = update.effective_chat
        if chat is not None and chat.type == ChatType.PRIVATE:
            text_only = formatting.text_only(self._user_language(update))
            await context.bot.send_message(chat.id, text_only)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one place unexpected errors end: logged with the update id, user gets an apology."""
        if not isinstance(update, Update):
            log.error("telegram error outside an update", exc_info=context.error)
            return
        log.error("update %s failed", update.update_id, exc_info=context.error)
        chat, message = update.effective_chat, update.effective_message
        if chat is None:
            return
        topic = message.message_thread_id if message and message.is_topic_message else None
        apology = formatting.apology(self._user_language(update))
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(chat.id, apology, message_thread_id=topic)

    def _user_language(self, update: Update) -> Translator:
        """The language to tell this update's sender something in."""
        user = update.effective_user
        return self._service.translator_for(user.language_code if user else None)
