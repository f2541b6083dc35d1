"""ENGINE__BACKEND=remote against real `qwenbot serve` processes: streamed replies with
speed footers, the reply cache in front, failover between servers and back, and the
servers' refusals turned into the same typed errors as the local engine's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.messages import IncomingMessage, ReplyDone, ReplyText
from bot.settings import BotSettings, Settings, StateSettings
from bot.state.open_state import open_state
from engine import ChatTurn, Engine, EngineSettings, GenerationRequest, TokenText
from engine.errors import Overloaded, PromptTooLong, RemoteUnavailable
from engine.serving.remote_runner import RemoteRunner
from tests.support.bot_process import bot_environment
from tests.support.http_server import free_port, metrics, request, serve
from tests.support.smollm2 import smollm2_gguf

pytestmark = pytest.mark.slow
KEY = "remote-backend-test-key"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One `qwenbot serve` with a key and a small input limit; its port."""
    state = tmp_path_factory.mktemp("remote-server")
    settings = {"SERVE__API_KEYS": KEY, "ENGINE__MAX_INPUT_TOKENS": "200",
                "ENGINE__MAX_NEW_TOKENS": "3000"}  # fmt: skip
    for port, _ in serve(state, tiny_model_dir, **settings):
        yield port


def front_settings(model: Path, tmp_path: Path, *ports: int, **extra: object) -> EngineSettings:
    """A remote backend in front of these servers, its reply cache under tmp_path."""
    urls = tuple(f"http://127.0.0.1:{port}/v1" for port in ports)
    given = {"remote_api_key": KEY, "max_new_tokens": 12, **extra}
    return EngineSettings(model=str(model), backend="remote", remote_urls=urls,
                          cache_dir=tmp_path / "responses", **given)  # type: ignore[arg-type]  # fmt: skip


running_server = contextlib.contextmanager(serve)


@contextlib.asynccontextmanager
async def started(settings: EngineSettings) -> AsyncIterator[Engine]:
    engine = Engine(settings)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def private(text: str, chat: int) -> IncomingMessage:
    return IncomingMessage("telegram", chat, chat, "Lan", text, is_private=True)


async def ask(engine: Engine, text: str) -> str:
    request = GenerationRequest(messages=(ChatTurn("user", text),))
    return (await engine.generate(request)).text


async def test_replies_stream_from_the_server_with_footers_and_are_cached_in_front(
    server: int, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        engine=front_settings(tiny_model_dir, tmp_path, server),
        bot=BotSettings(history_dir=tmp_path / "history", admin_ids="7"),
        state=StateSettings(),
    )
    state = open_state(settings)
    async with started(settings.engine) as engine:
        service = state.chat_service(engine)
        assert engine.effective.summary().endswith(
            f"remote inference on http://127.0.0.1:{server}/v1"
        )
        events = [event async for event in service.handle(private("Hello there", 7))]
        streamed = "".join(e.text for e in events if isinstance(e, ReplyText))
        done = events[-1]
        assert isinstance(done, ReplyDone) and done.text == streamed.strip() and done.text
        assert done.footer is not None and "s to first token" in done.footer
        assert done.stats.generated_tokens > 0 and not done.stats.cache_hit
        assert [t.role for t in state.history.load("telegram:7:")] == ["user", "assistant"]

        again = [event async for event in service.handle(private("Hello there", 8))]
        assert isinstance(again[-1], ReplyDone) and again[-1].text == done.text
        assert again[-1].footer is not None and "⚡ cached" in again[-1].footer
        remote = engine._runner
        assert (
            isinstance(remote, RemoteRunner) and remote.pool.servers[0].answered == 1
        )  # not asked again

        stats = [e async for e in service.handle(private("/stats", 7))][-1]
        assert f"Server http://127.0.0.1:{server}/v1: up · 0 in flight · 1 answered" in stats.text
    state.close()
    assert KEY not in caplog.text


async def test_a_server_down_is_left_for_the_other_and_used_again_once_it_is_back(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    late_port = free_port()
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    with running_server(tmp_path / "first", tiny_model_dir, SERVE__API_KEYS=KEY) as first:
        first_port, first_process = first
        settings = front_settings(tiny_model_dir, tmp_path, late_port, first_port)
        async with started(settings) as engine:
            assert isinstance(engine._runner, RemoteRunner)
            late, live = engine._runner.pool.servers
            assert not late.up and live.up  # nothing listens on the late one yet
            for n in range(3):
                assert await ask(engine, f"question {n}")
            assert live.answered == 3 and late.answered == 0

            with running_server(
                tmp_path / "second", tiny_model_dir, port=late_port, SERVE__API_KEYS=KEY
            ):
                deadline = time.monotonic() + 30
                while not late.up:
                    assert time.monotonic() < deadline, "the server that came up is unused"
                    await asyncio.sleep(0.2)
                # Both up: two questions at once go one to each (the least busy first).
                assert all(await asyncio.gather(ask(engine, "both a"), ask(engine, "both b")))
                assert (late.answered, live.answered) == (1, 4)
                first_process.terminate()  # now the first one goes away
                first_process.wait(30)
                # One of these is sent to the dead server first, and answered by the other.
                assert all(await asyncio.gather(ask(engine, "after a"), ask(engine, "after b")))
                assert late.answered == 3 and not live.up and live.failed >= 1


async def test_a_reply_the_user_leaves_stops_on_the_server_too(
    server: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = front_settings(tiny_model_dir, tmp_path, server, max_new_tokens=3000)
    cancelled = "qwenbot_engine_errors_total[('kind', 'cancelled')]"
    before = metrics(server).get(cancelled, 0.0)
    async with started(settings) as engine:
        request = GenerationRequest(messages=(ChatTurn("user", "a long story, please"),))
        async with contextlib.aclosing(engine.stream(request)) as events:
            async for event in events:
                if isinstance(event, TokenText):
                    break  # the user deleted the message: the stream is closed here
        deadline = time.monotonic() + 20
        while metrics(server).get(cancelled, 0.0) == before:
            assert time.monotonic() < deadline, "the server wrote the whole reply anyway"
            await asyncio.sleep(0.1)


async def test_each_server_gets_at_most_its_concurrency_the_rest_wait_or_hear_busy(
    server: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    one_at_a_time = {"remote_concurrency": 1, "max_new_tokens": 200}
    async with started(front_settings(tiny_model_dir, tmp_path, server, **one_at_a_time)) as engine:
        assert isinstance(engine._runner, RemoteRunner)
        target = engine._runner.pool.servers[0]
        seen: list[int] = []

        async def watch() -> None:
            while True:
                seen.append(target.in_flight)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        answers = await asyncio.gather(*(ask(engine, f"story {n}") for n in range(3)))
        watcher.cancel()
        assert all(answers) and max(seen) == 1 and target.answered == 3

    hasty = front_settings(tiny_model_dir, tmp_path, server, max_wait_s=0.01, **one_at_a_time)
    async with started(hasty) as engine:
        results = await asyncio.gather(ask(engine, "a"), ask(engine, "b"), return_exceptions=True)
    assert sum(isinstance(result, Overloaded) for result in results) == 1
    assert sum(isinstance(result, str) for result in results) == 1


async def test_the_servers_refusals_become_the_engines_typed_errors(
    server: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    async with started(front_settings(tiny_model_dir, tmp_path, server)) as engine:
        with pytest.raises(PromptTooLong) as too_long:
            await ask(engine, "word " * 400)  # fits here, not in the server's 200 tokens
        assert too_long.value.limit <= 200

    wrong_key = front_settings(tiny_model_dir, tmp_path, server, remote_api_key="not-the-key")
    async with started(wrong_key) as engine:
        with pytest.raises(RemoteUnavailable, match="no inference server is answering"):
            await ask(engine, "hello")


def test_a_qwenbot_serve_in_front_of_another_relays_and_reports_it_in_metrics(
    server: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    front = {"ENGINE__BACKEND": "remote", "ENGINE__REMOTE_URLS": f"http://127.0.0.1:{server}/v1",
             "ENGINE__REMOTE_API_KEY": KEY}  # fmt: skip
    with running_server(tmp_path, tiny_model_dir, **front) as (port, _):
        body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "Hi!"}]})
        status, headers, raw = request(port, "POST", "/v1/chat/completions", body.encode(),
                                       {"content-type": "application/json"})  # fmt: skip
        metrics = request(port, "GET", "/metrics")[2].decode().splitlines()
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"]
    assert headers["x-qwenbot-cache-hit"] == "false"
    url = f"http://127.0.0.1:{server}/v1"
    assert f'qwenbot_inference_server_up{{url="{url}"}} 1.0' in metrics
    answered = f'qwenbot_inference_server_replies_total{{outcome="answered",url="{url}"}} 1.0'
    assert answered in metrics


def test_qwenbot_chat_in_front_of_a_qwenbot_serve_answers_paris(tmp_path: Path) -> None:
    """The real SmolLM2 served by one process, asked through another's remote backend, as
    a user runs both."""
    gguf = smollm2_gguf()
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server", gguf, SERVE__API_KEYS=KEY,
                        ENGINE__MAX_NEW_TOKENS="32") as (port, _):  # fmt: skip
        environment = bot_environment(tmp_path / "front", gguf, ENGINE__BACKEND="remote",
                                      ENGINE__REMOTE_URLS=f"http://127.0.0.1:{port}/v1",
                                      ENGINE__REMOTE_API_KEY=KEY)  # fmt: skip
        chat = subprocess.run(
            [sys.executable, "-m", "bot", "chat", "--log-level", "INFO"],
            input="What is the capital of France?\n", capture_output=True, text=True,
            env=environment, cwd=tmp_path, timeout=300, check=False,
        )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "Paris" in chat.stdout
    assert "s to first token" in chat.stdout and "tok/s" in chat.stdout
    started = [line for line in chat.stderr.splitlines() if line.startswith("qwenbot ·")]
    assert started and started[0].endswith(f"remote inference on http://127.0.0.1:{port}/v1")
    assert "loaded weights" not in chat.stderr  # the weights stay on the server
    assert KEY not in chat.stderr
