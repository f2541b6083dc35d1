"""A real `redis-server` (Debian's package) on a free loopback port, its files in a temp
folder; stopped and started again on the same port and files to test an outage."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.http_server import free_port


class RedisServer:
    """One redis-server process; `url` stays the same across stop() and start()."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install -y redis-server")
        self._binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (with an append-only file: what it held comes back after a restart)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                     "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                     "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self._process = subprocess.Popen([self._binary, *arguments])
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    assert time.monotonic() < deadline, "redis-server did not come up"
                    assert self._process.poll() is None, "redis-server exited at start"
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it the hard way (SIGKILL: an outage, not a maintenance window)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def client(self) -> redis.Redis:
        """A client of this server (close it)."""
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)
