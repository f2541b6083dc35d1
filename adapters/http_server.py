"""The HTTP API's server: uvicorn on the entry point's event loop, listening before the
model loads (so /readyz can say 503 meanwhile, and a port already in use fails fast)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import uvicorn

from adapters.http_adapter import build_app
from adapters.http_slot import ServiceSlot
from bot.settings import ServeSettings

DEFAULT_PORT = 8000


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the entry point's stop event ends every
    platform alike; uvicorn's would take SIGTERM for itself and raise it again after), and
    saying when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class HttpAdapter:
    """The API served by uvicorn from start() until stop is set."""

    def __init__(self, settings: ServeSettings) -> None:
        self._settings = settings
        self.slot = ServiceSlot()  # filled once the model is loaded
        self._serving: asyncio.Task[None] | None = None
        config = uvicorn.Config(
            build_app(self.slot, settings),
            host=settings.host,
            port=settings.port or DEFAULT_PORT,
            log_config=None,  # our logging, configured in the entry point
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,  # streams in flight get this long at SIGTERM
        )
        self._server = _Server(config)

    @property
    def address(self) -> str:
        """host:port, for messages."""
        return f"{self._settings.host}:{self._settings.port or DEFAULT_PORT}"

    async def start(self) -> None:
        """Listen now; OSError when the address cannot be had (uvicorn would exit)."""
        self._serving = asyncio.create_task(self._serve())
        listening = asyncio.create_task(self._server.listening.wait())
        await asyncio.wait({self._serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if not self._server.started:
            await self._serving  # its OSError
            raise OSError(f"could not listen on {self.address}")

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then let requests finish (uvicorn's own shutdown)."""
        if self._serving is None:
            await self.start()
        assert self._serving is not None
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({self._serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        await self.close()

    async def close(self) -> None:
        """Stop listening and wait for uvicorn to finish (idempotent)."""
        if self._serving is not None:
            self._server.should_exit = True
            with suppress(OSError):  # a start that failed has said so already
                await self._serving

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exit_:  # uvicorn's answer to a port in use: not the whole bot's
            raise OSError(f"could not listen on {self.address}") from exit_
