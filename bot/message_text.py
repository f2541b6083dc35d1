"""A message's text as the model reads it: normalised, with the message it quotes, and a
platform's reply chain as conversation turns."""

from __future__ import annotations

import unicodedata

from bot.messages import IncomingMessage
from engine import ChatTurn


def normalize_text(text: str) -> str:
    """NFC: Vietnamese typed on different keyboards becomes the same characters (and tokens)."""
    return unicodedata.normalize("NFC", text).strip()


def with_quote(text: str, message: IncomingMessage) -> str:
    """Prefix the replied-to message as a quote, so "what does this mean?" has its subject."""
    if message.reply_chain:
        return text  # the chain itself is the context
    if message.reply_to is None or message.reply_to.from_bot or not message.reply_to.text:
        return text  # a reply to the bot's own message is already in the history
    quoted = "\n".join(f"> {line}" for line in normalize_text(message.reply_to.text).splitlines())
    return f"{quoted}\n\n{text}"


def chain_turns(message: IncomingMessage) -> list[ChatTurn]:
    """A platform reply chain as conversation turns (the bot's messages are its own turns)."""
    return [
        ChatTurn("assistant" if link.from_bot else "user", normalize_text(link.text))
        for link in message.reply_chain
        if link.text.strip()
    ]
