"""Getting a message to Telegram: retries on network errors, and reading its BadRequests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 3
T = TypeVar("T")


def is_parse_error(error: BadRequest) -> bool:
    """Telegram could not parse the HTML we sent (the text then goes as plain)."""
    message = error.message.lower()
    return "parse" in message or "entit" in message or "tag" in message


def not_modified(error: BadRequest) -> bool:
    """An edit to the text already shown: harmless."""
    return "not modified" in error.message.lower()


async def deliver(call: Callable[[], Awaitable[T]]) -> T:
    """Retry a send on network errors and 5xx answers (429s are the rate limiter's job)."""
    for attempt in range(1, DELIVERY_ATTEMPTS + 1):
        try:
            return await call()
        except (BadRequest, RetryAfter):
            raise
        except NetworkError as error:
            if attempt == DELIVERY_ATTEMPTS:
                raise
            log.warning("Telegram delivery failed (%s); retrying", error)
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")
