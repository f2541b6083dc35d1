"""The OpenAI chat-completions shapes qwenbot serves: the request it reads, the objects it writes.

Only what a chat model can honour is read (messages, max_tokens, temperature, top_p, seed,
stop, stream, n=1, user); fields other tools send that do not change a reply
(presence_penalty, ...) are accepted and ignored, as llama.cpp does. `user`, OpenAI's name
for an app's end user, makes the engine's queue fair between them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.messages import ReplyDone

MAX_STOP_SEQUENCES = 4  # as OpenAI's API


class TextPart(BaseModel):
    """One part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    """A conversation turn."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def turn(self) -> tuple[str, str]:
        """(role, text) ("developer" is OpenAI's newer name for "system")."""
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        return ("system" if self.role == "developer" else self.role), text


class StreamOptions(BaseModel):
    """What a stream carries besides the text."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: str | None = Field(None, max_length=256, description="the app's end user")

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        """The stop sequences, empty ones left out (the model's end of turn ends a reply
        anyway)."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(stop for stop in stops if stop)

    @property
    def token_limit(self) -> int | None:
        """max_completion_tokens (the newer name) over max_tokens."""
        return self.max_completion_tokens or self.max_tokens


def new_completion_id() -> str:
    """An id in OpenAI's style."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(done: ReplyDone) -> dict[str, int]:
    """Token counts in OpenAI's shape."""
    stats = done.stats
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
    }


def speed(done: ReplyDone) -> dict[str, Any]:
    """qwenbot's extension field: how fast this reply was (documented in the README)."""
    stats = done.stats
    return {
        "ttft_s": round(stats.ttft_s, 4),
        "decode_tokens_per_s": round(stats.decode_tps, 2),
        "total_s": round(stats.total_s, 4),
        "queue_wait_s": round(stats.queue_wait_s, 4),
        "cache_hit": stats.cache_hit,
        "reused_prompt_tokens": stats.reused_tokens,
    }


def completion(
    completion_id: str, model: str, text: str, done: ReplyDone, finish_reason: str
) -> dict[str, Any]:
    """The whole reply as one chat.completion object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(done),
        "qwenbot": speed(done),
    }


def chunk(
    completion_id: str, model: str, delta: dict[str, str], finish_reason: str | None = None
) -> dict[str, Any]:
    """One chat.completion.chunk of a stream."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
