"""`qwenbot` as an operator runs it: a real subprocess, on a state folder that outlives it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bot_environment(state: Path, model: Path, **settings: str) -> dict[str, str]:
    """Environment for a bot whose cache, history and inbox live under `state`."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # for the fake-Discord launcher; the bot itself is installed
        "ENGINE__MODEL": str(model),
        "ENGINE__WARMUP": "false",
        "ENGINE__CACHE_DIR": str(state / "responses"),
        "BOT__HISTORY_DIR": str(state / "history"),
        "BOT__INBOX_DIR": str(state / "inbox"),
        **settings,
    }


async def start_process(
    arguments: list[str], environment: dict[str, str], cwd: Path
) -> asyncio.subprocess.Process:
    """Start `python <arguments>` with its output piped (read it with communicate())."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *arguments,
        env=environment,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def kill(process: asyncio.subprocess.Process) -> str:
    """SIGKILL (an OOM kill, a power cut): no handler runs. Returns what it logged."""
    if process.returncode is None:
        process.kill()
    _, stderr = await process.communicate()
    return stderr.decode(errors="replace")
