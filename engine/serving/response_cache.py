"""Persistent cache of deterministic replies; a broken cache is bypassed, never fatal."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import diskcache

from engine.serving.json_store import STORE_ERRORS, dumps, open_json_store, read_row
from engine.text.prompt import template_version

if TYPE_CHECKING:
    from engine.events import Finished
    from engine.loading.bootstrap import LoadedModel
    from engine.loading.decode_loop import SamplingParams
    from engine.loading.remote_model import RemoteModel

log = logging.getLogger(__name__)

KEY_SCHEMA = 1  # bump when the meaning of a cached entry changes


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 over canonical JSON of everything that changes the output."""
    return hashlib.sha256(dumps({"schema": KEY_SCHEMA, **parts}).encode("utf-8")).hexdigest()


def reply_key(
    bundle: LoadedModel | RemoteModel,
    enable_thinking: bool,
    prompt_text: str,
    params: SamplingParams,
) -> str:
    """Identity of a deterministic reply: for the disk cache and for in-flight sharing."""
    return cache_key(
        {
            "model": bundle.fingerprint,
            "dtype": str(bundle.dtype),
            "backend": bundle.backend,
            "quantization": bundle.quantization,
            "template": template_version(bundle.tokenizer),
            "thinking": enable_thinking,
            "prompt": prompt_text,
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed if params.temperature > 0 else None,
            "ignore_stop": params.ignore_stop,
            # Only when given: keys of replies without stop strings stay as they were.
            **({"stop": list(params.stop)} if params.stop else {}),
        }
    )


@dataclass(frozen=True)
class CachedReply:
    """A stored reply: its visible text and the token counts of the run that made it."""

    text: str
    prompt_tokens: int
    generated_tokens: int
    created_at: float
    finish_reason: Literal["stop", "length"] = "stop"  # why the run that made it ended


def cached_reply(data: Any) -> CachedReply:
    """A reply as stored (parsed JSON), checked; a row of another shape raises."""
    return CachedReply(
        text=str(data["text"]),
        prompt_tokens=int(data["prompt_tokens"]),
        generated_tokens=int(data["generated_tokens"]),
        created_at=float(data["created_at"]),
        # Entries kept before the reason was: "stop" (a reply cut at the limit says "length").
        finish_reason="length" if data.get("finish_reason") == "length" else "stop",
    )


def reply_json(reply: CachedReply) -> str:
    """A reply as stored: canonical JSON text, never a pickle."""
    return dumps(asdict(reply))


def as_cached(finished: Finished) -> CachedReply:
    """A finished reply as the cache keeps it."""
    stats = finished.stats
    return CachedReply(
        finished.text,
        stats.prompt_tokens,
        stats.generated_tokens,
        time.time(),
        "length" if finished.finish_reason == "length" else "stop",
    )


class ReplyCache(Protocol):
    """Where deterministic replies are kept: a disk store here, or one shared by several
    processes (bot.state's Redis store). A broken store answers misses, never raises."""

    @property
    def available(self) -> bool:
        """False when replies can never be cached (the store could not be opened)."""
        ...

    def get(self, key: str) -> CachedReply | None:
        """The cached reply for key, or None."""
        ...

    def put(self, key: str, reply: CachedReply) -> None:
        """Keep a reply (best effort)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class ResponseCache:
    """diskcache-backed, JSON only, size-limited with least-recently-used eviction."""

    def __init__(self, directory: Path, size_limit_bytes: int) -> None:
        self.directory = directory
        self._store: diskcache.Cache | None = None
        try:
            self._store = open_json_store(directory, size_limit_bytes, "reply cache")
        except STORE_ERRORS as error:
            log.warning("response cache at %s unusable, running without it: %s", directory, error)

    @property
    def available(self) -> bool:
        """False when the store could not be opened (replies are then never cached)."""
        return self._store is not None

    def get(self, key: str) -> CachedReply | None:
        """The cached reply for key, or None on a miss or any store error."""
        if self._store is None:
            return None
        return read_row(self._store, key, cached_reply, "reply cache")

    def put(self, key: str, reply: CachedReply) -> None:
        """Store a reply; failures are logged and otherwise ignored."""
        if self._store is None:
            return
        try:
            self._store.set(key, reply_json(reply))
        except STORE_ERRORS as error:
            log.warning("response cache write failed, reply not cached: %s", error)

    def close(self) -> None:
        """Close the underlying database."""
        if self._store is not None:
            try:
                self._store.close()
            except STORE_ERRORS as error:
                log.warning("response cache close failed: %s", error)
            self._store = None
