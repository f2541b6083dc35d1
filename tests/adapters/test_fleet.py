"""Two real `qwenbot telegram` processes in webhook mode serving one bot token, sharing one
real Redis: updates land on either (as behind nginx), and the bot behaves as one."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.adapters.test_telegram_chat import finals
from tests.support.bot_process import bot_environment, kill, start_process
from tests.support.fake_telegram import TOKEN, FakeBotAPI
from tests.support.http_server import free_port, request, serve
from tests.support.redis_server import RedisServer

SECRET = "fleet-webhook-secret"
pytestmark = pytest.mark.slow

Process = asyncio.subprocess.Process


class Fleet:
    """Bot processes on one Redis, each with its own webhook port."""

    def __init__(self, api: FakeBotAPI, redis: RedisServer, model: Path, folder: Path) -> None:
        self.api, self.redis, self.model, self.folder = api, redis, model, folder
        self.ports: list[int] = []
        self.processes: list[Process] = []

    async def start(self, **settings: str) -> int:
        """Start one more process; its index once its webhook server answers."""
        index, port = len(self.processes), free_port()
        environment = bot_environment(
            self.folder / f"process-{index}",
            self.model,
            TELEGRAM__TOKEN=TOKEN,
            TELEGRAM__BASE_URL=self.api.base_url,
            TELEGRAM__MODE="webhook",
            TELEGRAM__WEBHOOK_URL="https://bot.example.invalid/telegram",
            TELEGRAM__WEBHOOK_LISTEN="127.0.0.1",
            TELEGRAM__WEBHOOK_PORT=str(port),
            TELEGRAM__WEBHOOK_SECRET=SECRET,
            TELEGRAM__SHUTDOWN_GRACE_S="0.2",
            STATE__REDIS_URL=self.redis.url,
            STATE__OWNER_TTL_S="2",
            **{"ENGINE__MAX_NEW_TOKENS": "12", **settings},
        )
        process = await start_process(["-m", "bot", "telegram"], environment, self.folder)
        self.ports.append(port)
        self.processes.append(process)
        webhooks = len(self.api.sent("setWebhook"))
        await self.api.wait_for(lambda: len(self.api.sent("setWebhook")) > webhooks, within=120)
        return index

    async def post(self, index: int, update: dict[str, Any]) -> None:
        """Deliver an update to one process, as Telegram (through nginx) would."""
        url = f"http://127.0.0.1:{self.ports[index]}/telegram"
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json=update, headers=headers) as r,
        ):
            assert r.status == 200

    async def ask(self, index: int, text: str, chat: int, replies: int) -> dict[str, Any]:
        """A user's message to process `index`; returns once the chat has `replies` finals."""
        update = self.api.message(text, chat_id=chat, user_id=chat)
        await self.post(index, update)
        await self.api.wait_for(lambda: len(finals(self.api, chat)) >= replies, within=60)
        return update

    async def close(self) -> list[str]:
        """Stop every process; what each logged."""
        return [await kill(process) for process in self.processes]


@pytest.fixture
async def fleet(
    fake_api: FakeBotAPI, redis_server: RedisServer, tiny_model_dir: Path, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """Bot processes on the fake Bot API and a real Redis; killed after the test."""
    running = Fleet(fake_api, redis_server, tiny_model_dir, tmp_path)
    try:
        yield running
    finally:
        await running.close()


def stored_history(redis: RedisServer, chat: int) -> list[dict[str, str]]:
    """A private chat's history as the processes left it in Redis."""
    client = redis.client()
    try:
        return list(json.loads(client.get(f"qwenbot:history:telegram:{chat}:")))
    finally:
        client.close()


def texts(api: FakeBotAPI, chat: int) -> list[str]:
    """Every message sent to a chat."""
    return [call["text"] for call in api.sent("sendMessage", chat)]


async def test_two_processes_behind_one_webhook_act_as_one_bot(
    fleet: Fleet, fake_api: FakeBotAPI, redis_server: RedisServer
) -> None:
    limits = {"BOT__RATE_LIMIT_BURST": "3", "BOT__RATE_LIMIT_PER_MINUTE": "0.5"}
    await fleet.start(**limits)
    await fleet.start(**limits)

    # A conversation whose turns land on alternating processes keeps its whole history.
    for turn, index in enumerate([0, 1, 0]):
        await fleet.ask(index, f"Turn {turn}: tell me more", chat=1001, replies=turn + 1)
    stored = stored_history(redis_server, 1001)
    asked = [turn["content"] for turn in stored if turn["role"] == "user"]
    assert asked == [f"Turn {n}: tell me more" for n in range(3)]
    assert [turn["role"] for turn in stored] == ["user", "assistant"] * 3

    # A question answered by one is a cache hit on the other (same prompt, new chats).
    await fleet.ask(0, "What is 2+2?", chat=2001, replies=1)
    await fleet.ask(1, "What is 2+2?", chat=2002, replies=1)
    first, second = finals(fake_api, 2001)[0], finals(fake_api, 2002)[0]
    assert "⚡ cached" not in first and "⚡ cached" in second
    assert first.split("⚡")[0] == second.split("⚡")[0]

    # A user's rate limit holds across both: a burst of 3, wherever the messages land.
    for n, index in enumerate([0, 1, 0]):
        await fleet.ask(index, f"Quick question {n}", chat=3001, replies=n + 1)
    await fleet.post(1, fake_api.message("And one more?", chat_id=3001, user_id=3001))
    await fake_api.wait_for(lambda: any("please wait" in t for t in texts(fake_api, 3001)))

    # The same update delivered to both processes is answered once.
    update = fake_api.message("Hello from a retry", chat_id=4001, user_id=4001)
    await asyncio.gather(fleet.post(0, update), fleet.post(1, update))
    await fake_api.wait_for(lambda: finals(fake_api, 4001), within=60)
    await asyncio.sleep(1.0)
    assert len(finals(fake_api, 4001)) == 1


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
async def test_a_process_stopped_mid_answer_its_question_is_answered_once_by_the_other(
    fleet: Fleet, fake_api: FakeBotAPI, stop: str
) -> None:
    """SIGKILL: no handler, no goodbye; taken over once its alive key runs out. SIGTERM (a
    deploy, 0.2 s grace): the answer in flight is cancelled and left owed, the alive key
    deleted on the way out, and the other process answers it."""
    doomed = await fleet.start(ENGINE__MAX_NEW_TOKENS="3000")  # still writing when killed
    await fleet.start()
    asked = fake_api.message("Tell me a long story, please", chat_id=5001, user_id=5001)
    await fleet.post(doomed, asked)
    await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 5001), within=60)
    if stop == "SIGKILL":
        fleet.processes[doomed].kill()
    else:
        fleet.processes[doomed].send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(fleet.processes[doomed].wait(), 60)
    assert exit_code == (-signal.SIGKILL if stop == "SIGKILL" else 0)
    assert not finals(fake_api, 5001)

    await fake_api.wait_for(lambda: finals(fake_api, 5001), within=60)
    answered = [c for c in fake_api.sent("sendMessage", 5001) if "⚡" in c["text"]]
    assert answered[0]["reply_parameters"]["message_id"] == asked["message"]["message_id"]
    await asyncio.sleep(3)  # several sweeps later: still answered once
    assert len(finals(fake_api, 5001)) == 1
    logs = await fleet.close()
    assert "answering 1 messages taken before the restart" in logs[1]


async def test_redis_down_mid_run_the_bot_answers_throughout_then_recovers(
    fleet: Fleet, fake_api: FakeBotAPI, redis_server: RedisServer
) -> None:
    await fleet.start(BOT__ADMIN_IDS="6001")
    await fleet.ask(0, "Remember this: my name is Lan", chat=6001, replies=1)
    redis_server.stop()
    await fleet.ask(0, "Are you still there?", chat=6001, replies=2)  # answered, no memory
    await fleet.post(0, fake_api.message("/stats", chat_id=6001, user_id=6001))
    await fake_api.wait_for(lambda: any("DOWN" in t for t in texts(fake_api, 6001)))
    redis_server.start()
    await asyncio.sleep(3)  # the heartbeat notices within a second or two
    await fleet.ask(0, "What is my name?", chat=6001, replies=3)
    asked = [
        turn["content"] for turn in stored_history(redis_server, 6001) if turn["role"] == "user"
    ]
    # What Redis held before the outage came back; the turn during it was not remembered.
    assert asked == ["Remember this: my name is Lan", "What is my name?"]
    await fleet.post(0, fake_api.message("/stats", chat_id=6001, user_id=6001))
    await fake_api.wait_for(lambda: any(" · up" in t for t in texts(fake_api, 6001)))
    logs = await fleet.close()
    assert "is not answering" in logs[0] and "is back" in logs[0]


def test_two_http_servers_share_the_reply_cache_and_each_keys_limit(
    redis_server: RedisServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    shared = {"STATE__REDIS_URL": redis_server.url, "SERVE__API_KEYS": "fleet-http-key",
              "SERVE__RATE_LIMIT_BURST": "3", "SERVE__RATE_LIMIT_PER_MINUTE": "0.5"}  # fmt: skip
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    with (
        contextmanager(serve)(tmp_path / "one", tiny_model_dir, **shared) as (one, _),
        contextmanager(serve)(tmp_path / "two", tiny_model_dir, **shared) as (two, _),
    ):
        body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "Hi!"}]})
        headers = {"authorization": "Bearer fleet-http-key", "content-type": "application/json"}
        answers = [request(port, "POST", "/v1/chat/completions", body.encode(), headers)
                   for port in (one, two, one, two)]  # fmt: skip
        metrics = request(one, "GET", "/metrics")[2].decode()
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]  # one key, one burst
    assert [h["x-qwenbot-cache-hit"] for _, h, _ in answers[:3]] == ["false", "true", "true"]
    texts_seen = {json.loads(raw)["choices"][0]["message"]["content"] for _, _, raw in answers[:3]}
    assert len(texts_seen) == 1
    assert "qwenbot_shared_state_up 1.0" in metrics.splitlines()
