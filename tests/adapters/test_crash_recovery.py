"""SIGKILL mid-answer, as an OOM kill or a power cut would: the real `qwenbot telegram` and
`qwenbot discord` processes, restarted on the same state folder, answer the question once."""

from __future__ import annotations

import asyncio
import signal
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.test_discord_chat import MENTION
from tests.adapters.test_discord_chat import finals as discord_finals
from tests.adapters.test_telegram_chat import finals
from tests.support.bot_process import bot_environment, kill, start_process
from tests.support.fake_discord import BOT_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.support.fake_discord import TOKEN as DISCORD_TOKEN
from tests.support.fake_telegram import TOKEN, FakeBotAPI

LONG = {"ENGINE__MAX_NEW_TOKENS": "3000"}  # an answer still being written when it is killed
SHORT = {"ENGINE__MAX_NEW_TOKENS": "24"}


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
async def test_telegram_stopped_mid_answer_then_a_restart_answers_once(
    fake_api: FakeBotAPI, tiny_model_dir: Path, tmp_path: Path, stop: str
) -> None:
    """SIGKILL: nothing runs. SIGTERM (a deploy) with a 0.2 s grace: the answer in flight
    is cancelled, and the next start gives it."""

    def telegram(settings: dict[str, str]) -> dict[str, str]:
        platform = {
            "TELEGRAM__TOKEN": TOKEN,
            "TELEGRAM__BASE_URL": fake_api.base_url,
            "TELEGRAM__SHUTDOWN_GRACE_S": "0.2",
        }
        return bot_environment(tmp_path / "state", tiny_model_dir, **platform, **settings)

    first = await start_process(["-m", "bot", "telegram"], telegram(LONG), tmp_path)
    try:
        await fake_api.wait_for(lambda: fake_api.sent("setMyCommands"), within=120)
        asked = fake_api.message("Tell me a long story, please")
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1001), within=60)
        if stop == "SIGTERM":
            first.send_signal(signal.SIGTERM)
            await asyncio.wait_for(first.wait(), 60)
            assert first.returncode == 0
    finally:
        await kill(first)
    assert not finals(fake_api, 1001)

    second = await start_process(["-m", "bot", "telegram"], telegram(SHORT), tmp_path)
    try:
        answer = await fake_api.wait_for(lambda: finals(fake_api, 1001), within=120)
        sent = [c for c in fake_api.sent("sendMessage", 1001) if "⚡" in c["text"]]
        assert sent[0]["reply_parameters"]["message_id"] == asked["message"]["message_id"]
        fake_api.message("Thanks! And a short one?")  # answered after the first, in order
        await fake_api.wait_for(lambda: len(finals(fake_api, 1001)) == 2, within=60)
        await asyncio.sleep(0.5)
        assert len(finals(fake_api, 1001)) == 2 and answer[0] == finals(fake_api, 1001)[0]
    finally:
        log = await kill(second)
    assert "answering 1 messages taken before the restart" in log


async def test_discord_sigkill_mid_answer_then_a_restart_answers_once(
    fake_discord: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    def discord(settings: dict[str, str]) -> dict[str, str]:
        platform = {
            "DISCORD__TOKEN": DISCORD_TOKEN,
            "DISCORD__GUILD_ID": str(GUILD_ID),
            "DISCORD__EDIT_INTERVAL_S": "0.2",
            "FAKE_DISCORD_REST": fake_discord.rest_base,
            "FAKE_DISCORD_GATEWAY": fake_discord.gateway_url,
        }
        return bot_environment(tmp_path / "state", tiny_model_dir, **platform, **settings)

    launch = ["-m", "tests.support.fake_discord_launch", "discord"]
    first = await start_process(launch, discord(LONG), tmp_path)
    try:
        await fake_discord.wait_for(lambda: fake_discord.commands, 120)
        await asyncio.sleep(2.5)  # discord.py waits for its guilds before on_ready
        asked = await fake_discord.message_create(f"{MENTION} tell me a story", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(CHANNEL_ID), 60)
        # Killed once the first words are posted and journaled. (Between Discord's answer to
        # the post and the journal's write there is a window of a few milliseconds where a
        # kill leaves the words behind: their id is not known before Discord answers.)
        await fake_discord.wait_for(lambda: _journaled_posts(tmp_path / "state" / "inbox"), 60)
    finally:
        await kill(first)
    half = fake_discord.bot_messages(CHANNEL_ID)
    assert len(half) == 1 and not discord_finals(fake_discord)

    second = await start_process(launch, discord(SHORT), tmp_path)
    try:
        await fake_discord.wait_for(lambda: discord_finals(fake_discord), 120)
        await asyncio.sleep(0.5)
        replies = fake_discord.bot_messages(CHANNEL_ID)
    finally:
        log = await kill(second)
    # One answer, replying to the question; the half-written one was taken back.
    assert len(replies) == 1 and "⚡" in replies[0]["content"]
    assert replies[0]["message_reference"]["message_id"] == str(asked["id"])
    assert half[0]["id"] != replies[0]["id"]
    assert "answering 1 messages taken before the restart" in log


def starts(api: FakeBotAPI) -> list[Any]:
    """One English command menu per bot start (the other languages' menus follow it)."""
    return [call for call in api.sent("setMyCommands") if not call.get("language_code")]


async def test_every_store_overwritten_with_garbage_is_repaired_on_the_next_start(
    fake_api: FakeBotAPI, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from bot.history import HistoryStore

    state = tmp_path / "state"
    platform = {"TELEGRAM__TOKEN": TOKEN, "TELEGRAM__BASE_URL": fake_api.base_url}
    environment = bot_environment(state, tiny_model_dir, **platform, **SHORT)

    async def run_one_conversation(text: str, answers: int) -> str:
        process = await start_process(["-m", "bot", "telegram"], environment, tmp_path)
        try:
            await fake_api.wait_for(lambda: len(starts(fake_api)) == answers)
            fake_api.message(text)
            await fake_api.wait_for(lambda: len(finals(fake_api, 1001)) == answers, within=120)
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
        finally:
            log = await kill(process)
        return log

    await run_one_conversation("Hello, I am Lan.", 1)
    databases = [state / "history" / "cache.db", state / "responses" / "cache.db"]
    databases.append(state / "inbox" / "inbox.db")
    for database in databases:
        assert database.is_file()
        database.write_bytes(b"\x13\x37 not a database any more " * 200)

    log = await run_one_conversation("Do you remember my name?", 2)
    for what in ("history store", "reply cache", "inbox journal"):
        assert f"{what} at" in log and "was damaged" in log
    assert "memory only" not in log and "Traceback" not in log
    assert len(list((state).glob("*.damaged-*"))) == 3

    await run_one_conversation("And now?", 3)  # the repaired stores kept the last turn
    history = HistoryStore(state / "history", 1 << 20)
    try:
        turns = history.load("telegram:1001:")
    finally:
        history.close()
    assert [turn.content for turn in turns if turn.role == "user"] == [
        "Do you remember my name?",
        "And now?",
    ]


def _journaled_posts(inbox: Path) -> bool:
    """Whether the inbox journal holds a posted message id (read as another process would)."""
    import sqlite3

    with closing(sqlite3.connect(f"file:{inbox / 'inbox.db'}?mode=ro", uri=True)) as db:
        return any(sent not in (None, "[]") for (sent,) in db.execute("SELECT sent FROM inbox"))
