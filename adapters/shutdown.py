"""What every platform does with replies still running when the bot is told to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


async def finish_or_cancel(replies: Iterable[asyncio.Task[Any]], grace_s: float) -> None:
    """Give replies in flight `grace_s` seconds to finish, then cancel what is left."""
    pending = {task for task in replies if not task.done()}
    if not pending:
        return
    _, still_running = await asyncio.wait(pending, timeout=grace_s)
    for task in still_running:
        task.cancel()
    if still_running:
        log.info("cancelled %d replies in flight at shutdown", len(still_running))
        await asyncio.wait(still_running, timeout=5)
