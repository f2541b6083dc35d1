"""Where the HTTP API finds the chat service: empty while the model loads."""

from __future__ import annotations

from adapters.http_errors import ApiError
from bot.access import Limiter
from bot.service import ChatService


class ServiceSlot:
    """The chat service once the model is loaded: until then the API answers its probes
    (/readyz: 503) and refuses requests with 503."""

    def __init__(self) -> None:
        self.service: ChatService | None = None
        # Per-key request limits shared by a fleet (bot.state); None: this process's own.
        self.limiter: Limiter | None = None

    def require(self) -> ChatService:
        """The service, or a 503 while the model loads."""
        if self.service is None:
            raise ApiError(503, "the model is still loading", "server_error", "not_ready",
                           retry_after_s=5)  # fmt: skip
        return self.service
