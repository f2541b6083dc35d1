"""Every HTTP error in OpenAI's shape, {"error": {"message", "type", "param", "code"}}.

The one place the HTTP API turns failures into responses: bad JSON or fields, keys, sizes,
the engine's typed errors, and anything unexpected (logged, never a traceback to a client).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bot.messages import ReplyRefused

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with its HTTP status, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.param, self.retry_after_s = code, param, retry_after_s

    def response(self) -> JSONResponse:
        """The JSON response (with Retry-After when the client should come back)."""
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return JSONResponse(body(self.message, self.kind, self.code, self.param),
                            status_code=self.status, headers=headers)  # fmt: skip


def body(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The error object, for responses and for a stream's last event."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# HTTP status and OpenAI error type per refusal kind; the rest is a server error.
_REFUSALS: dict[str, tuple[int, str]] = {
    "too_long": (400, "invalid_request_error"),
    "overloaded": (429, "rate_limit_error"),
    "too_many_queued": (429, "rate_limit_error"),
    "not_ready": (503, "server_error"),
    "remote_unavailable": (503, "server_error"),  # a front end whose servers are down
}


def from_refusal(refused: ReplyRefused) -> ApiError:
    """What the engine would not answer, as an HTTP answer."""
    status, kind = _REFUSALS.get(refused.kind, (500, "server_error"))
    code = "context_length_exceeded" if refused.kind == "too_long" else refused.kind
    param = "messages" if refused.kind == "too_long" else None
    return ApiError(
        status, str(refused), kind, code, param=param, retry_after_s=refused.retry_after_s
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(ReplyRefused)
    async def _refused(_: Request, refused: ReplyRefused) -> JSONResponse:
        return from_refusal(refused).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(where) or None
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            message, param = "the body is not valid JSON", None
        return ApiError(400, f"{param}: {message}" if param else message, param=param).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return ApiError(error.status_code, str(error.detail), kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.error("an HTTP request failed: %s: %s", type(error).__name__, error,
                  exc_info=log.isEnabledFor(logging.DEBUG))  # fmt: skip
        return ApiError(500, "internal error", "server_error").response()
