"""A reply's events shown one by one until they end or its asker presses Stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from bot.messages import ReplyEvent


async def show_until_stopped(
    events: AsyncGenerator[ReplyEvent, None],
    show: Callable[[ReplyEvent], Awaitable[None]],
    stop: asyncio.Event | None,
) -> bool:
    """Show each event as it comes; True when `stop` was set first (the pending step is
    cancelled, which closes the engine's stream: the generation stops at the next token)."""
    if stop is None:  # nothing can stop it: no task per event
        async for event in events:
            await show(event)
        return False
    halt = asyncio.ensure_future(stop.wait())  # one for the whole reply
    try:
        while True:
            step = asyncio.ensure_future(_next(events))
            try:
                if not halt.done():
                    await asyncio.wait({step, halt}, return_when=asyncio.FIRST_COMPLETED)
                if halt.done() and not step.done():
                    await _cancelled(step)
                    return True
                event = await step
            except StopAsyncIteration:
                return False
            except BaseException:
                await _cancelled(step)  # a shutdown: the stream is not left running
                raise
            await show(event)
    finally:
        halt.cancel()


async def _next(events: AsyncGenerator[ReplyEvent, None]) -> ReplyEvent:
    """The next event, as a coroutine a task can run (and a Stop can cancel)."""
    return await anext(events)


async def _cancelled(step: asyncio.Future[ReplyEvent]) -> None:
    """Cancel a pending step and wait until the stream below it has closed."""
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await step
