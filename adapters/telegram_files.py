"""A Telegram document read as a message: fetched through the Bot API, decoded as text."""

from __future__ import annotations

from dataclasses import replace

from telegram import Bot, Document, Message

from bot import text_files
from bot.messages import IncomingMessage
from bot.service import ChatService
from bot.text_files import FileRefused, TextFile, check_before_download, decode


def file_url_base(base_url: str) -> str:
    """Where the Bot API serves files, beside its methods: https://api.telegram.org/bot ->
    https://api.telegram.org/file/bot (a self-hosted telegram-bot-api server alike)."""
    return base_url.removesuffix("bot") + "file/bot"


async def document_text(bot: Bot, document: Document, limit: int) -> TextFile:
    """The document's text; FileRefused for a binary file or one over `limit` bytes (told
    from Telegram's description where it can be, before downloading)."""
    check_before_download(document.mime_type, document.file_size, limit)
    file = await bot.get_file(document.file_id)
    data = bytes(await file.download_as_bytearray())
    return decode(document.file_name or "file.txt", data, limit)


async def with_document(
    bot: Bot, message: Message, incoming: IncomingMessage, service: ChatService
) -> IncomingMessage | None:
    """The message with its document's text (the caption is the question); None when the
    file was refused, after telling the user why in their language."""
    if message.document is None:
        return incoming
    t = service.translator(incoming)
    try:
        document = await document_text(bot, message.document, service.max_file_bytes)
    except FileRefused as error:
        await message.reply_text(text_files.refusal(t, error), do_quote=True)
        return None
    return replace(incoming, text=text_files.as_message(t, incoming.text, [document]))
