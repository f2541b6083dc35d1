"""Discord attachments read as the message: text files, and the message.txt Discord makes of
a paste over 2,000 characters."""

from __future__ import annotations

from dataclasses import replace

import discord

from bot import text_files
from bot.messages import IncomingMessage
from bot.service import ChatService
from bot.text_files import FileRefused, TextFile, check_before_download, decode


async def with_attachments(
    message: discord.Message, incoming: IncomingMessage, service: ChatService
) -> IncomingMessage | str:
    """The message with its text attachments read in (message.txt as the message itself,
    other files under their names); or, when there is nothing to answer but a refused file
    (or a text file is too big), what to tell the user, in their language. Pictures beside
    a question are left aside, as before."""
    if not message.attachments:
        return incoming
    t = service.translator(incoming)
    limit = service.max_file_bytes
    files: list[TextFile] = []
    refused: FileRefused | None = None
    for attachment in message.attachments:
        try:
            check_before_download(attachment.content_type, attachment.size, limit)
            files.append(decode(attachment.filename, await attachment.read(), limit))
        except FileRefused as error:
            refused = refused or error
    if refused is not None and (refused.kind == "too_big" or not (files or incoming.text.strip())):
        return text_files.refusal(t, refused)
    if not files:
        return incoming
    return replace(incoming, text=text_files.as_message(t, incoming.text, files))
