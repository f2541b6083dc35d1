"""Telegram's apps send a text over 4,096 characters as several messages, back to back: the
parts are read as one message, answered once and counted once by the rate limit.

A text message of at least LONG_PART_UNITS opens a paste for its sender in its chat; a text
message from the same sender in the same chat that arrives while the paste is open joins
it, and keeps it open while it is long too. The opening part's handler waits, at most
`window_s` after each long part, then reads the whole. Parts are taken in when they arrive
(before the chat's queue), so the handler of the first sees the others; each part stays
in the journal until the joined message is answered, so after a crash they are read back
and joined again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from telegram import Message, Update

from bot.splitting import utf16_length

LONG_PART_UNITS = 3000  # the apps cut at 4,096 UTF-16 units, at a line or word end


@dataclass
class _Paste:
    """The parts of one paste so far."""

    first_update: int
    parts: list[Message]
    keys: list[str] = field(default_factory=list)  # journal keys of the parts after the first
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    open: bool = True


def _text_part(update: object) -> tuple[tuple[int, int], Message] | None:
    """(chat, sender) and the message, for a plain text message (no file, no command)."""
    if not isinstance(update, Update) or update.message is None:
        return None
    message = update.message
    if message.text is None or message.from_user is None or message.text.startswith("/"):
        return None
    return (message.chat_id, message.from_user.id), message


def _long(message: Message) -> bool:
    return utf16_length(message.text or "") >= LONG_PART_UNITS


class PasteJoiner:
    """The pastes being received, per chat and sender."""

    def __init__(self, window_s: float) -> None:
        self._window = window_s  # 0: never join
        self._open: dict[tuple[int, int], _Paste] = {}  # the paste a sender's next part may join
        self._by_first: dict[int, _Paste] = {}  # every paste not finished, by its first update

    def arrive(self, update: object, key: str) -> bool:
        """Called as an update arrives, before it waits for its chat: True when it joined a
        paste (its own handling is then over); a long text opens one."""
        found = _text_part(update) if self._window > 0 else None
        if found is None:
            return False
        who, message = found
        paste = self._open.get(who)
        if paste is not None and paste.open and _long(paste.parts[-1]):
            paste.parts.append(message)
            paste.keys.append(key)
            paste.arrived.set()
            return True
        if _long(message) and isinstance(update, Update):
            self._open[who] = self._by_first[update.update_id] = _Paste(update.update_id, [message])
        return False

    async def gather(self, update: Update) -> list[Message]:
        """For the handler of a paste's first part: every part, once no more is coming (the
        last one is short, or none came for window_s); just this message otherwise."""
        paste = self._by_first.get(update.update_id)
        if paste is None:
            message = update.effective_message
            return [message] if message is not None else []
        while _long(paste.parts[-1]):
            paste.arrived.clear()
            try:
                await asyncio.wait_for(paste.arrived.wait(), self._window)
            except TimeoutError:
                break
        paste.open = False
        return paste.parts

    def finished(self, update: object) -> list[str]:
        """After the first part's handler: the other parts' journal keys (done now), and the
        paste is forgotten (a part that came too late has opened its own meanwhile)."""
        if not isinstance(update, Update):
            return []
        paste = self._by_first.pop(update.update_id, None)
        if paste is None:
            return []
        found = _text_part(update)
        if found is not None and self._open.get(found[0]) is paste:
            del self._open[found[0]]
        return paste.keys
