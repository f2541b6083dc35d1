"""One streamed chat completion from an OpenAI-compatible server (qwenbot serve, vLLM,
llama.cpp's llama-server), its failures sorted by what the caller should do next."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import RemoteRejected


class ServerFailed(Exception):
    """This server could not answer (down, erring, a wrong key): another one may."""


class ServerBusy(Exception):
    """This server said 429: another one may take it, or the caller waits."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ContextExceeded(Exception):
    """The server says the conversation does not fit its model's context."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.limit = _limit_in(message)


# How qwenbot serve, vLLM and llama-server state the limit a prompt went over.
_LIMITS = (r"at most (\d+)", r"maximum context length is (\d+)", r"context size \((\d+)")


def _limit_in(message: str) -> int | None:
    for pattern in _LIMITS:
        found = re.search(pattern, message)
        if found:
            return int(found.group(1))
    return None


@dataclass(frozen=True)
class StreamEnd:
    """How the reply ended, and the server's token counts when it gave them."""

    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None


async def stream_chat(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> AsyncGenerator[str | StreamEnd, None]:
    """POST {url}/chat/completions with stream on (the client carries the API key): the
    reply's text deltas, then a StreamEnd. Raises ServerFailed, ServerBusy,
    ContextExceeded, or RemoteRejected (a request the server will never take: no other
    server would either)."""
    finish, prompt_tokens, completion_tokens = "stop", None, None
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise _refusal(response)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = _json(data)
                if "error" in chunk:
                    raise ServerFailed(f"failed mid-reply: {_message(chunk)}")
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        yield str(delta)
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage") or {}
                prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
                completion_tokens = usage.get("completion_tokens", completion_tokens)
    except httpx.HTTPError as error:  # refused, reset, timed out: the server, not the request
        raise ServerFailed(f"{type(error).__name__}: {error}") from error
    yield StreamEnd(str(finish), prompt_tokens, completion_tokens)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ServerFailed(f"not JSON: {text[:80]!r}") from error
    if not isinstance(value, dict):
        raise ServerFailed(f"not a JSON object: {text[:80]!r}")
    return value


def _message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:200]


def _refusal(response: httpx.Response) -> Exception:
    """A non-200 answer as the exception that says what to do next."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    message = f"HTTP {status}: {_message(body) if isinstance(body, dict) else body}"
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if status == 400 and (code == "context_length_exceeded" or "context" in message.lower()):
        return ContextExceeded(message)
    if status == 429:
        retry = response.headers.get("retry-after")
        return ServerBusy(message, float(retry) if retry and retry.isdigit() else None)
    if status in (400, 422):  # this request, anywhere: not the server's fault
        return RemoteRejected(f"the inference server refused the request ({message})")
    return ServerFailed(message)  # 401/403 (its key), 404 (its URL), 5xx, 503 loading
