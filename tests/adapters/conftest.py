"""Running bots against fake platform servers: Telegram here, Discord in discord_fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.adapters.discord_fixtures import fake_discord, start_discord  # noqa: F401
from tests.support.fake_telegram import TOKEN, FakeBotAPI

if TYPE_CHECKING:
    from adapters.telegram_adapter import TelegramAdapter
    from engine.engine import Engine


@dataclass
class RunningBot:
    """A started adapter and the means to stop it."""

    adapter: TelegramAdapter
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        """Set the stop event and wait for a clean exit."""
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


StartBot = Callable[..., Awaitable[RunningBot]]


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotAPI]:
    """The fake Bot API server on 127.0.0.1."""
    api = FakeBotAPI()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def start_bot(
    engine: Engine, fake_api: FakeBotAPI, tmp_path: Path
) -> AsyncIterator[StartBot]:
    """Start a Telegram bot on the tiny engine; bot_* and telegram settings per test."""
    from adapters.telegram_adapter import TelegramAdapter
    from bot.history import HistoryStore
    from bot.inbox import Inbox
    from bot.service import ChatService
    from bot.settings import BotSettings, TelegramSettings

    running: list[RunningBot] = []
    stores: list[HistoryStore] = []
    inboxes: list[Inbox] = []

    async def start(
        bot: dict[str, Any] | None = None, use_engine: Engine | None = None, **telegram: Any
    ) -> RunningBot:
        bot_settings = BotSettings(history_dir=tmp_path / "history", **(bot or {}))
        store = HistoryStore(bot_settings.history_dir, 1 << 20)
        stores.append(store)
        # A restart in a test is a new adapter on the same state folder: same inbox path.
        inbox = Inbox(tmp_path / "inbox", bot_settings.replay_within_s)
        inboxes.append(inbox)
        service = ChatService(use_engine or engine, bot_settings, store)
        settings = TelegramSettings(
            token=TOKEN,
            base_url=fake_api.base_url,
            edit_interval_s=0.05,
            group_edit_interval_s=0.05,
            **telegram,
        )
        adapter = TelegramAdapter(service, settings, inbox)
        stop = asyncio.Event()
        bot_run = RunningBot(adapter, stop, asyncio.create_task(adapter.run(stop)))
        running.append(bot_run)
        await fake_api.wait_for(lambda: fake_api.sent("setMyCommands") or bot_run.task.done())
        if bot_run.task.done():
            bot_run.task.result()  # surface a start-up failure
        return bot_run

    yield start
    for bot_run in running:
        if not bot_run.task.done():
            await bot_run.shutdown()
    for store in stores:
        store.close()
    for inbox in inboxes:
        inbox.close()
