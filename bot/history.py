"""Per-conversation history: persisted as JSON, trimmed by the model's own token count."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine import STORE_ERRORS, ChatTurn, dumps, open_json_store, read_row

log = logging.getLogger(__name__)

TokenCounter = Callable[[Sequence[ChatTurn]], int]


class ConversationHistory(Protocol):
    """Where conversations are remembered: HistoryStore (one process) or Redis (a fleet)."""

    def load(self, key: str) -> list[ChatTurn]:
        """The stored turns of a conversation, oldest first."""
        ...

    def save(self, key: str, turns: Sequence[ChatTurn]) -> None:
        """Replace the stored turns of a conversation."""
        ...

    def clear(self, key: str) -> None:
        """Forget a conversation."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class HistoryStore:
    """Conversation turns (user and assistant, never the system prompt) per conversation key.

    A damaged store is moved aside and started afresh; one unreadable conversation is
    dropped, not the store. A store that cannot be opened at all (an unwritable folder) is
    bypassed with a warning: the bot then answers without memory rather than not at all.
    """

    def __init__(self, directory: Path, size_limit_bytes: int) -> None:
        self._store = None
        try:
            self._store = open_json_store(directory, size_limit_bytes, "history store")
        except STORE_ERRORS as error:
            log.warning("history store at %s unusable, memory only: %s", directory, error)
        self._memory: dict[str, list[ChatTurn]] = {}

    def load(self, key: str) -> list[ChatTurn]:
        """The stored turns of a conversation, oldest first."""
        if self._store is None:
            return list(self._memory.get(key, []))
        turns = read_row(self._store, key, parse_turns, "history store")
        return turns or []

    def save(self, key: str, turns: Sequence[ChatTurn]) -> None:
        """Replace the stored turns of a conversation."""
        if self._store is None:
            self._memory[key] = list(turns)
            return
        try:
            self._store.set(key, turns_json(turns))
        except STORE_ERRORS as error:
            log.warning("history write failed: %s", error)

    def clear(self, key: str) -> None:
        """Forget a conversation."""
        self._memory.pop(key, None)
        if self._store is None:
            return
        try:
            self._store.delete(key)
        except STORE_ERRORS as error:
            log.warning("history delete failed: %s", error)

    def close(self) -> None:
        """Flush and close the store."""
        if self._store is not None:
            self._store.close()
            self._store = None


def turns_json(turns: Sequence[ChatTurn]) -> str:
    """A conversation as stored: JSON text of role/content pairs."""
    return dumps([{"role": turn.role, "content": turn.content} for turn in turns])


def parse_turns(stored: Any) -> list[ChatTurn]:
    """A stored conversation, checked: a row written by something else is refused."""
    turns = []
    for item in stored:
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise ValueError(f"not a chat turn: {str(item)[:40]!r}")
        turns.append(ChatTurn(role=item["role"], content=str(item["content"])))
    return turns


def trim_to_budget(
    system: ChatTurn,
    history: Sequence[ChatTurn],
    new_turn: ChatTurn,
    count: TokenCounter,
    budget: int,
) -> list[ChatTurn]:
    """The history to send: all of it while system + history + new turn fit the token
    budget; once they do not, the oldest turns are dropped down to half the budget.

    Dropping to half, not just under the budget, is what keeps long chats fast: the next
    several turns then extend the same history, so the engine continues from the state it
    kept. Dropping one pair per turn would change the prompt's beginning on every turn,
    and every turn would read the whole history again. Turns go in user/assistant pairs so
    the model never sees an answer without its question; the system prompt and the new
    message are always kept.
    """
    turns = list(history)
    if count([system, *turns, new_turn]) <= budget:
        return turns
    target = budget // 2
    while turns and count([system, *turns, new_turn]) > target:
        drop = 2 if len(turns) >= 2 and turns[0].role == "user" else 1
        turns = turns[drop:]
    return turns


def without_last_answer(history: list[ChatTurn], question: ChatTurn) -> list[ChatTurn]:
    """The history less its last exchange when that was this question and an answer (the
    answer a retry replaces); as it is otherwise."""
    if len(history) >= 2 and history[-1].role == "assistant" and history[-2] == question:
        return history[:-2]
    return history
