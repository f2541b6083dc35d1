"""`qwenbot serve` as a client sees it: a real server process on loopback, the official
`openai` client and raw HTTP, on the tiny model."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.support.bot_process import ROOT, bot_environment
from tests.support.http_server import metrics
from tests.support.http_server import request as _request
from tests.support.http_server import serve as _serve
from tests.support.http_server import status as _status

KEY = "sk-test-one"
QUESTION = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def keyed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server with two API keys."""
    state = tmp_path_factory.mktemp("serve-keyed")
    keys = {"SERVE__API_KEYS": f"{KEY}, sk-test-two", "SERVE__RATE_LIMIT_BURST": "100"}
    for port, _ in _serve(state, tiny_model_dir, **keys):
        yield port


@pytest.fixture(scope="module")
def strict(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A keyless loopback server with a tight rate limit and body size."""
    state = tmp_path_factory.mktemp("serve-strict")
    settings = {"SERVE__RATE_LIMIT_BURST": "2", "SERVE__RATE_LIMIT_PER_MINUTE": "1",
                "SERVE__MAX_BODY_KB": "1"}  # fmt: skip
    for port, _ in _serve(state, tiny_model_dir, **settings):
        yield port


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()  # its connection pool, else a ResourceWarning


def _client(port: int, key: str = KEY) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    _OPEN.append(client)
    return client


def test_the_openai_client_gets_a_whole_reply_with_usage_and_speed(keyed: int) -> None:
    reply = _client(keyed).chat.completions.create(model="any", messages=QUESTION, max_tokens=5)  # type: ignore[arg-type]
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    speed = (reply.model_extra or {})["qwenbot"]
    assert speed["decode_tokens_per_s"] >= 0 and speed["ttft_s"] > 0


def test_the_openai_client_streams_the_same_reply(keyed: int) -> None:
    client = _client(keyed)
    whole = client.chat.completions.create(model="any", messages=QUESTION, max_tokens=6)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="any", messages=QUESTION, max_tokens=6, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [reason for reason in finishes if reason] == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_raw_server_sent_events_end_with_done(keyed: int) -> None:
    body = json.dumps({"messages": QUESTION, "stream": True, "max_tokens": 4}).encode()
    status, headers, raw = _request(keyed, "POST", "/v1/chat/completions", body,
                                    {"Authorization": f"Bearer {KEY}",
                                     "Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in raw.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    objects = [json.loads(event) for event in events[:-1]]
    assert {o["object"] for o in objects} == {"chat.completion.chunk"}
    assert objects[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_a_missing_or_wrong_key_is_refused(keyed: int) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        _client(keyed, "sk-wrong").chat.completions.create(model="any", messages=QUESTION)  # type: ignore[arg-type]
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    status, _, _ = _request(keyed, "GET", "/v1/models")
    assert status == 401
    # Probes stay open; the second key works too.
    assert _status(keyed, "/healthz") == 200 and _status(keyed, "/readyz") == 200
    models = _client(keyed, "sk-test-two").models.list()
    assert [model.id for model in models.data] == [Path(str(models.data[0].id)).name]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"role": "robot", "content": "hi"}]}', "messages.0.role"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 5}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', "n"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}',
            "stop",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_400s(keyed: int, body: bytes, param: str | None) -> None:
    status, _, raw = _request(keyed, "POST", "/v1/chat/completions", body,
                              {"Authorization": f"Bearer {KEY}"})  # fmt: skip
    error = json.loads(raw)["error"]
    assert status == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["message"]
    assert "Traceback" not in raw.decode()


def test_a_conversation_too_long_for_the_model_is_refused_with_the_limit(keyed: int) -> None:
    long = [{"role": "user", "content": "word " * 50_000}]
    with pytest.raises(openai.BadRequestError) as refused:
        _client(keyed).chat.completions.create(model="any", messages=long)  # type: ignore[arg-type]
    assert refused.value.code == "context_length_exceeded"
    assert "tokens" in str(refused.value.message)


def test_floods_and_large_bodies_are_refused(strict: int) -> None:
    client = _client(strict, "unused")
    for _ in range(2):  # the burst
        client.chat.completions.create(model="any", messages=QUESTION, max_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="any", messages=QUESTION, max_tokens=1)  # type: ignore[arg-type]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 4096}]}).encode()
    status, _, raw = _request(strict, "POST", "/v1/chat/completions", big)
    assert status == 413 and json.loads(raw)["error"]["code"] == "too_large"


def test_listening_beyond_loopback_needs_keys(tiny_model_dir: Path, tmp_path: Path) -> None:
    environment = bot_environment(tmp_path, tiny_model_dir, SERVE__HOST="0.0.0.0")
    done = subprocess.run([sys.executable, "-m", "bot", "serve"], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "SERVE__API_KEYS" in done.stderr
    assert str(ROOT) not in done.stderr  # one line, no traceback


def test_metrics_parse_and_move_with_each_request(keyed: int) -> None:
    before = metrics(keyed)  # open without a key, like the probes
    answered = "qwenbot_requests_total[('outcome', 'answered'), ('platform', 'http')]"
    _client(keyed).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Count to three."}], max_tokens=3
    )
    after = metrics(keyed)
    assert after[answered] == before.get(answered, 0) + 1
    assert after["qwenbot_generated_tokens_total[]"] > before["qwenbot_generated_tokens_total[]"]
    count = "qwenbot_time_to_first_token_seconds_count[]"
    assert after[count] == before[count] + 1
    assert after["qwenbot_process_resident_memory_bytes[]"] > 10_000_000


def test_probes_answer_while_the_model_loads_and_a_busy_port_fails_fast(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The server listens before the model loads (importing torch alone takes a second).
    for port, _ in _serve(tmp_path, tiny_model_dir, until="/healthz"):
        early = [_request(port, "GET", "/readyz"), _request(port, "POST", "/v1/chat/completions",
                 json.dumps({"messages": QUESTION}).encode())]  # fmt: skip
        assert [status for status, _, _ in early] == [503, 503]
        assert {json.loads(raw)["error"]["code"] for _, _, raw in early} == {"not_ready"}
        assert all(int(headers["retry-after"]) >= 1 for _, headers, _ in early)
        deadline = time.monotonic() + 240
        while _status(port, "/readyz") != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        environment = bot_environment(tmp_path / "second", tiny_model_dir, SERVE__PORT=str(port))
        second = subprocess.run([sys.executable, "-m", "bot", "serve"], env=environment,
                                cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                check=False)  # fmt: skip
        assert second.returncode == 1 and f"could not listen on 127.0.0.1:{port}" in second.stderr
        assert "Traceback" not in second.stderr


def test_eight_streams_at_once_are_decoded_as_one_batch(keyed: int) -> None:
    def ask(index: int) -> str:
        stream = _client(keyed).chat.completions.create(
            model="any", max_tokens=200, stream=True, user=f"reader-{index}",
            messages=[{"role": "user", "content": f"Tell me story number {index}."}],
        )  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert all(answers)
    assert metrics(keyed)["qwenbot_batch_size_max[]"] == 8


def test_a_client_leaving_mid_stream_withdraws_its_reply(keyed: int) -> None:
    cancelled = "qwenbot_engine_errors_total[('kind', 'cancelled')]"
    before = metrics(keyed).get(cancelled, 0)
    body = json.dumps({"messages": [{"role": "user", "content": "Write a long essay."}],
                       "stream": True, "max_tokens": 3000, "temperature": 0.7})  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", keyed, timeout=60)
    connection.request("POST", "/v1/chat/completions", body=body,
                       headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    connection.close()  # the reader goes away after the first chunk
    deadline = time.monotonic() + 60
    while metrics(keyed).get(cancelled, 0) != before + 1:
        assert time.monotonic() < deadline, "the reply was not withdrawn"
        time.sleep(0.1)


def test_a_stop_sequence_ends_the_reply_before_it(keyed: int) -> None:
    client = _client(keyed)
    question = [{"role": "user", "content": "Say something."}]
    whole = client.chat.completions.create(model="any", messages=question, max_tokens=8)  # type: ignore[arg-type]
    text = whole.choices[0].message.content or ""
    stop = next((text[i : i + 2] for i in range(2, len(text) - 1) if text[i : i + 2].strip()), "")
    assert stop, f"the tiny model's reply is too short to cut: {text!r}"
    for stream in (False, True):
        reply = client.chat.completions.create(
            model="any", messages=question, max_tokens=8, stop=[stop], stream=stream,  # type: ignore[arg-type]
        )  # fmt: skip
        if stream:
            chunks = [c for c in reply if c.choices]  # type: ignore[union-attr]
            content = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            content, finish = reply.choices[0].message.content, reply.choices[0].finish_reason  # type: ignore[union-attr]
        assert (content, finish) == (text[: text.index(stop)], "stop")
