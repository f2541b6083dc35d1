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
    """Wraps a model's forward to count calls (one per prefill or decode step)."""

    def __init__(self, model: Any, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self._model = model
        self._inner: Callable[..., Any] = model.forward
        self._fail_on_call = fail_on_call
        model.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self._fail_on_call:
            raise RuntimeError("injected failure inside the model")
        return self._inner(*args, **kwargs)

    def restore(self) -> None:
        """Put the original forward back."""
        self._model.forward = self._inner


async def wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    """Poll until predicate() holds (the worker is another thread)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
