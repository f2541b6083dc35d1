"""Small helpers for building requests and draining engine streams in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.engine import Engine
from engine.events import ChatTurn, EngineEvent, GenerationRequest


def request(text: str, **params: Any) -> GenerationRequest:
    """A one-message conversation."""
    return GenerationRequest(messages=(ChatTurn("user", text),), **params)


async def collect(engine: Engine, req: GenerationRequest) -> list[EngineEvent]:
    """Every event of one stream."""
    return [event async for event in engine.stream(req)]


class ForwardCounter:
    """Wraps a model's forward passes to count calls (one per prompt pass or decode step):
    the native decoder's read_prompts and decode, else transformers' forward."""

    def __init__(self, model: Any, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self._model = model
        names = [name for name in ("read_prompts", "decode") if hasattr(model, name)]
        self._inner: dict[str, Callable[..., Any]] = {
            name: getattr(model, name) for name in names or ["forward"]
        }
        self._fail_on_call = fail_on_call
        for name, inner in self._inner.items():
            setattr(model, name, self._counting(inner))

    def _counting(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._fail_on_call:
                raise RuntimeError("injected failure inside the model")
            return inner(*args, **kwargs)

        return call

    def restore(self) -> None:
        """Put the original methods back."""
        for name, inner in self._inner.items():
            setattr(self._model, name, inner)


async def wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    """Poll until predicate() holds (the worker is another thread)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
