"""A chat service on the tiny model, with history in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.history import HistoryStore
from bot.messages import IncomingMessage, ReplyEvent
from bot.service import ChatService
from bot.settings import BotSettings
from engine.engine import Engine

ServiceFactory = Callable[..., ChatService]


@pytest.fixture
async def make_service(engine: Engine, tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """Build a ChatService with bot settings overridden per test."""
    stores: list[HistoryStore] = []

    def build(**overrides: Any) -> ChatService:
        settings = BotSettings(history_dir=tmp_path / "history", **overrides)
        store = HistoryStore(settings.history_dir, 1 << 20)
        stores.append(store)
        return ChatService(engine, settings, store)

    yield build
    for store in stores:
        store.close()


def dm(text: str, user_id: int = 42, chat_id: int = 42, **extra: Any) -> IncomingMessage:
    """A private message."""
    return IncomingMessage("test", chat_id, user_id, "Lan", text, is_private=True, **extra)


def group(text: str, user_id: int = 42, chat_id: int = -100, **extra: Any) -> IncomingMessage:
    """A group message."""
    return IncomingMessage("test", chat_id, user_id, "Lan", text, is_private=False, **extra)


async def replies(service: ChatService, message: IncomingMessage) -> list[ReplyEvent]:
    """All reply events for one message."""
    return [event async for event in service.handle(message)]
