"""`qwenbot serve`: OpenAI's chat-completions API on the engine the chat platforms share.

POST /v1/chat/completions (whole or streamed as Server-Sent Events), GET /v1/models,
/healthz (the process answers), /readyz (the model is loaded), /metrics (Prometheus) and
/ (a chat page on the API).
A request becomes a conversation for ChatService.converse: the caller's own messages, its
API key's rate limit, the engine's input limits and queue. Keys are compared in constant
time; without keys the server only listens on loopback (ServeSettings refuses the rest).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from adapters.http_errors import ApiError, body, from_refusal, install_error_handlers
from adapters.http_metrics import CONTENT_TYPE, metrics_text, service_registry
from adapters.http_schemas import (
    ChatCompletionRequest,
    chunk,
    completion,
    new_completion_id,
    speed,
    usage,
)
from adapters.http_slot import ServiceSlot
from bot.access import RateLimiter
from bot.messages import ReplyDone, ReplyRefused, ReplyText
from bot.service import ReplyOptions
from bot.settings import ServeSettings

log = logging.getLogger(__name__)


def build_app(slot: ServiceSlot, settings: ServeSettings) -> FastAPI:
    """The API's routes on the service its slot will hold."""
    app = FastAPI(title="qwenbot", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    keys = [key.get_secret_value().encode() for key in settings.api_keys]
    own_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    limit = settings.max_body_kb * 1024

    def caller(request: Request) -> str:
        """Who asks: the index of their key (never the key itself, which may be logged)."""
        if not keys:
            return "local"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Every key is compared, in constant time: the timing tells nothing about any key.
        matches = [hmac.compare_digest(token.strip().encode(), key) for key in keys]
        if scheme.lower() != "bearer" or not any(matches):
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer <key>",
                           "authentication_error", "invalid_api_key")  # fmt: skip
        return f"key{matches.index(True)}"

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        service = slot.service
        if service is not None and service.ready():
            return JSONResponse({"status": "ready", "model": service.model_name()})
        return ApiError(503, "the model is not loaded", "server_error", "not_ready",
                        retry_after_s=5).response()  # fmt: skip

    registry = service_registry(slot)
    page = (Path(__file__).parent / "http_page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> str:
        return page  # the API's own client: no build step, no assets from elsewhere

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not settings.open_metrics:
            caller(request)
        return Response(metrics_text(registry), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        caller(request)
        service = slot.require()
        card = {"id": service.model_name(), "object": "model", "created": 0,
                "owned_by": "qwenbot", "qwenbot": service.effective_summary()}  # fmt: skip
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        owner = caller(request)
        service = slot.require()
        model = service.model_name()
        asked = _parse(await _read_body(request, limit))
        wait = (slot.limiter or own_limiter).acquire(f"http:{owner}")
        if wait > 0:
            service.requests.record("http", "rate_limited")
            raise ApiError(429, f"too many requests; try again in {wait:.0f} s",
                           "rate_limit_error", "rate_limited", retry_after_s=wait)  # fmt: skip
        options = ReplyOptions(
            asked.token_limit, asked.temperature, asked.top_p, asked.seed, asked.stops
        )
        turns = [message.turn() for message in asked.messages]
        # The engine queues fairly between owners: an app's end users, when it names them.
        who = f"http:{owner}" if asked.user is None else f"http:{owner}:{asked.user}"
        events = service.converse(who, turns, options)
        if asked.stream:
            first = await _first_event(events)  # refusals answer with a status, not a stream
            include_usage = bool(asked.stream_options and asked.stream_options.include_usage)
            stream = _sse(events, first, model, include_usage)
            return StreamingResponse(stream, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})  # fmt: skip
        async with aclosing(events) as replies:
            async for event in replies:
                if isinstance(event, ReplyDone):
                    reply = completion(new_completion_id(), model, event.text, event,
                                       _finish_reason(event))  # fmt: skip
                    return JSONResponse(reply, headers=_speed_headers(event))
        raise ApiError(500, "the reply ended without text", "server_error")

    return app


def _parse(raw: bytes) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from error


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) once it passes the limit, declared or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit // 1024} KB", code="too_large")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"the body is larger than {limit // 1024} KB", code="too_large")
        parts.append(part)
    return b"".join(parts)


async def _first_event(events: AsyncIterator[Any]) -> Any:
    """The stream's first text or end, so a refused request gets its status code."""
    try:
        async for event in events:
            if isinstance(event, ReplyText | ReplyDone):
                return event
    except ReplyRefused:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return None


async def _sse(
    events: AsyncIterator[Any], first: Any, model: str, include_usage: bool
) -> AsyncIterator[str]:
    """OpenAI's chunks as Server-Sent Events, ending with `data: [DONE]`. A client that
    goes away cancels this generator, which withdraws its reply from the engine."""
    completion_id = new_completion_id()

    def event(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield event(chunk(completion_id, model, {"role": "assistant", "content": ""}))
    async with aclosing(events) as replies:  # type: ignore[type-var]
        pending = [first]
        try:
            while True:
                item = pending.pop() if pending else await anext(replies, None)
                if item is None:
                    break
                if isinstance(item, ReplyText) and item.text:
                    yield event(chunk(completion_id, model, {"content": item.text}))
                elif isinstance(item, ReplyDone):
                    last = chunk(completion_id, model, {}, _finish_reason(item))
                    last["qwenbot"] = speed(item)
                    yield event(last)
                    if include_usage:
                        yield event({**chunk(completion_id, model, {}), "choices": [],
                                     "usage": usage(item)})  # fmt: skip
        except ReplyRefused as refused:  # after the stream began: its status is sent
            error = from_refusal(refused)
            yield event(body(error.message, error.kind, error.code))
    yield "data: [DONE]\n\n"


def _finish_reason(done: ReplyDone) -> str:
    return "length" if done.finish_reason == "length" else "stop"


def _speed_headers(done: ReplyDone) -> dict[str, str]:
    """The reply's speed figures as response headers too."""
    figures = speed(done)
    return {
        "x-qwenbot-ttft-s": str(figures["ttft_s"]),
        "x-qwenbot-decode-tokens-per-s": str(figures["decode_tokens_per_s"]),
        "x-qwenbot-cache-hit": "true" if figures["cache_hit"] else "false",
    }
