"""The replies of this process that Stop and Retry buttons (and /stop) may still act on, on
any platform: a reply's question, where it went, and the event a Stop press sets."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bot.messages import IncomingMessage

REMEMBERED = 1024  # replies kept for their buttons, the oldest forgotten first
Target = TypeVar("Target")


@dataclass
class LiveReply(Generic[Target]):
    """One answer the buttons act on."""

    reply_id: str
    question: IncomingMessage
    target: Target  # where the answer went, in the platform's terms: a retry's goes there too
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = True

    @property
    def asker(self) -> int:
        """The only user whose presses count."""
        return self.question.user_id


class LiveReplies(Generic[Target]):
    """The replies of this process that buttons may still act on."""

    def __init__(self) -> None:
        self._replies: OrderedDict[str, LiveReply[Target]] = OrderedDict()
        self._latest: dict[str, str] = {}  # conversation -> its newest reply's id

    def start(self, question: IncomingMessage, target: Target) -> LiveReply[Target]:
        """A new reply to `question`; it becomes its conversation's newest."""
        reply = LiveReply(secrets.token_hex(6), question, target)
        self._replies[reply.reply_id] = reply
        self._latest[question.conversation_key] = reply.reply_id
        while len(self._replies) > REMEMBERED:
            _, oldest = self._replies.popitem(last=False)
            if self._latest.get(oldest.question.conversation_key) == oldest.reply_id:
                del self._latest[oldest.question.conversation_key]
        return reply

    def get(self, reply_id: str) -> LiveReply[Target] | None:
        """A reply by its buttons' id; None once forgotten (or from before a restart)."""
        return self._replies.get(reply_id)

    def is_latest(self, reply: LiveReply[Target]) -> bool:
        """Whether no newer reply came in its conversation (only the newest is retried)."""
        return self._latest.get(reply.question.conversation_key) == reply.reply_id

    def running_for(self, chat_id: int, user_id: int) -> LiveReply[Target] | None:
        """The newest reply being written for this user in this chat (what /stop stops)."""
        for reply in reversed(self._replies.values()):
            if reply.running and reply.question.chat_id == chat_id and reply.asker == user_id:
                return reply
        return None
