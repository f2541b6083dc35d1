"""`qwenbot telegram` as an operator runs it: the real SmolLM2 model, the fake Bot API."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.adapters.test_telegram_chat import finals
from tests.support.fake_telegram import TOKEN, FakeBotAPI
from tests.support.smollm2 import smollm2_gguf


@pytest.mark.slow
async def test_paris_in_a_private_chat_then_a_clean_sigterm(
    fake_api: FakeBotAPI, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TELEGRAM__TOKEN": TOKEN,
        "TELEGRAM__BASE_URL": fake_api.base_url,
        "ENGINE__MODEL": str(smollm2_gguf()),
        "ENGINE__CACHE_DIR": str(tmp_path / "responses"),
        "BOT__HISTORY_DIR": str(tmp_path / "history"),
        # Its own inbox: the fake's update ids start at 1 in every test, and an inbox that
        # outlived another run would take them for redeliveries.
        "BOT__INBOX_DIR": str(tmp_path / "inbox"),
        "QWENBOT_LOG_LEVEL": "DEBUG",  # the most verbose logs must still hide the token
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "telegram",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await fake_api.wait_for(lambda: fake_api.sent("setMyCommands"), within=300)
        fake_api.message("What is the capital of France?")
        final = await fake_api.wait_for(lambda: finals(fake_api, 1001), within=300)
        assert "Paris" in final[0] and "tok/s" in final[0]
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    log = stderr.decode()
    assert "getUpdates" in log and TOKEN not in log and TOKEN.split(":")[1] not in log
    assert "Traceback" not in log
