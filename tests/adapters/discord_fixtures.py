"""A running Discord bot (real discord.py) against the fake gateway and REST API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.fake_discord import TOKEN, FakeDiscord

if TYPE_CHECKING:
    from adapters.discord_adapter import DiscordAdapter
    from engine.engine import Engine


@dataclass
class RunningDiscord:
    """A started adapter and the means to stop it."""

    adapter: DiscordAdapter
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        """Set the stop event and wait for a clean exit."""
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


StartDiscord = Callable[..., Awaitable[RunningDiscord]]


@pytest.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1, with discord.py pointed at it."""
    fake = FakeDiscord()
    await fake.start()
    fake.patch_discord(monkeypatch)
    yield fake
    await fake.stop()


@pytest.fixture
async def start_discord(
    engine: Engine, fake_discord: FakeDiscord, tmp_path: Path
) -> AsyncIterator[StartDiscord]:
    """Start the Discord bot on the tiny engine; bot_* and discord settings per test."""
    from adapters.discord_adapter import DiscordAdapter
    from bot.history import HistoryStore
    from bot.inbox import Inbox
    from bot.service import ChatService
    from bot.settings import BotSettings, DiscordSettings
    from tests.support.fake_discord import GUILD_ID

    running: list[RunningDiscord] = []
    stores: list[HistoryStore] = []
    inboxes: list[Inbox] = []

    async def start(
        bot: dict[str, Any] | None = None, use_engine: Engine | None = None, **discord: Any
    ) -> RunningDiscord:
        bot_settings = BotSettings(history_dir=tmp_path / "history", **(bot or {}))
        store = HistoryStore(bot_settings.history_dir, 1 << 20)
        stores.append(store)
        # A restart in a test is a new adapter on the same state folder: same inbox path.
        inbox = Inbox(tmp_path / "inbox", bot_settings.replay_within_s)
        inboxes.append(inbox)
        service = ChatService(use_engine or engine, bot_settings, store)
        settings = DiscordSettings(
            **{"token": TOKEN, "guild_id": GUILD_ID, "edit_interval_s": 0.05, **discord}
        )
        adapter = DiscordAdapter(service, settings, inbox, guild_ready_timeout=0.2)
        stop = asyncio.Event()
        run = RunningDiscord(adapter, stop, asyncio.create_task(adapter.run(stop)))
        running.append(run)
        await fake_discord.wait_for(lambda: run.task.done() or fake_discord.commands, 30)
        if run.task.done():
            run.task.result()
        await asyncio.wait_for(adapter.bot.wait_until_ready(), 30)
        return run

    yield start
    for run in running:
        if not run.task.done():
            await run.shutdown()
    for store in stores:
        store.close()
    for inbox in inboxes:
        inbox.close()
