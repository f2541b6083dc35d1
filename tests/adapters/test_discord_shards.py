"""Discord sharding: DISCORD__SHARD_COUNT and DISCORD__SHARD_IDS run this process's shards
on discord.py's AutoShardedBot, and the bot answers there as it does unsharded."""

from __future__ import annotations

import pytest

from bot.settings import DiscordSettings
from tests.adapters.discord_fixtures import StartDiscord
from tests.adapters.test_discord_chat import MENTION, finals
from tests.support.fake_discord import BOT_ID, GUILD_ID, FakeDiscord


async def test_a_shard_process_identifies_as_its_shard_and_answers(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    shard = (GUILD_ID >> 22) % 2  # the shard Discord puts this server on
    run = await start_discord(shard_count=2, shard_ids=(shard,))
    assert fake_discord.last_identify["shard"] == [shard, 2]
    assert run.adapter.bot.shard_count == 2
    await fake_discord.message_create(f"{MENTION} hello from a shard", mentions=[BOT_ID])
    await fake_discord.wait_for(lambda: finals(fake_discord))


def test_shard_settings_are_checked() -> None:
    assert DiscordSettings(shard_count=4, shard_ids="0, 2").shard_ids == (0, 2)
    with pytest.raises(ValueError, match="needs DISCORD__SHARD_COUNT"):
        DiscordSettings(shard_ids="1")
    with pytest.raises(ValueError, match="from 0 to 3"):
        DiscordSettings(shard_count=4, shard_ids="4")
