"""A real `qwenbot serve` process on a free loopback port, and plain HTTP requests to it."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.bot_process import bot_environment


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(
    state: Path, model: Path, until: str = "/readyz", port: int | None = None, **settings: str
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A `qwenbot serve` process (on `port`, else a free one), yielded once `until`
    answers 200."""
    port = port or free_port()
    settings = {"ENGINE__MAX_NEW_TOKENS": "8", **settings}  # short replies unless asked
    environment = bot_environment(state, model, SERVE__PORT=str(port), **settings)
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--log-level", "INFO"], env=environment,
        cwd=state, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while status(port, until) != 200:
        assert server.poll() is None, server.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.05)
    try:
        yield port, server
    finally:
        if server.poll() is None:
            server.terminate()
        _, log = server.communicate(timeout=60)
        assert "Traceback" not in log, log[-3000:]


def status(port: int, path: str) -> int:
    """A GET's status code; 0 while nothing listens."""
    try:
        return request(port, "GET", path)[0]
    except OSError:
        return 0


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def metrics(port: int) -> dict[str, float]:
    """The server's Prometheus samples, keyed by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    status_code, headers, raw = request(port, "GET", "/metrics")
    assert status_code == 200 and headers["content-type"].startswith("text/plain")
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(raw.decode())
        for sample in family.samples
    }
