"""The joining of split pastes, part by part, as updates arrive and handlers finish."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from telegram import Update

from adapters.telegram_paste import LONG_PART_UNITS, PasteJoiner

IDS = itertools.count(1)


def text_update(text: str, user_id: int = 7, chat_id: int = 7) -> Update:
    """A Telegram text message update, as PTB parses it."""
    update_id = next(IDS)
    data: dict[str, Any] = {
        "update_id": update_id,
        "message": {
            "message_id": update_id, "date": 0, "text": text,
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Lan"},
        },
    }  # fmt: skip
    return Update.de_json(data, None)


LONG = "x" * LONG_PART_UNITS


async def test_parts_join_while_long_and_a_late_part_stands_alone() -> None:
    joiner = PasteJoiner(0.2)
    first, second, third = text_update(LONG), text_update(LONG), text_update("the end?")
    assert not joiner.arrive(first, "k1")
    assert joiner.arrive(second, "k2") and joiner.arrive(third, "k3")
    parts = await joiner.gather(first)
    assert [part.text for part in parts] == [LONG, LONG, "the end?"]
    assert joiner.finished(first) == ["k2", "k3"]  # done with the joined answer

    # A long part, then nothing within the window: the paste closes; a late long part,
    # arriving before the first one's handler finished, opens a paste of its own, and the
    # first one's joined part is still done with it.
    alone, joined = text_update(LONG), text_update(LONG)
    assert not joiner.arrive(alone, "k4") and joiner.arrive(joined, "k5")
    gathering = asyncio.ensure_future(joiner.gather(alone))
    await asyncio.sleep(0.4)
    late = text_update(LONG)
    assert not joiner.arrive(late, "k6")  # the window had passed: its own message
    assert len(await gathering) == 2
    assert joiner.finished(alone) == ["k5"]
    assert [part.text for part in await asyncio.wait_for(joiner.gather(late), 1)] == [LONG]
    assert joiner.finished(late) == []


async def test_other_senders_short_messages_and_commands_never_join() -> None:
    joiner = PasteJoiner(1.0)
    first = text_update(LONG)
    assert not joiner.arrive(first, "k1")
    assert not joiner.arrive(text_update(LONG, user_id=8), "k2")  # someone else
    assert not joiner.arrive(text_update("/stop"), "k3")  # a command
    short = text_update("hi")
    assert joiner.arrive(short, "k4")  # the same sender: the last part of the paste
    assert not joiner.arrive(text_update("and more"), "k5")  # after a short part: new message
    assert PasteJoiner(0).arrive(text_update(LONG), "k6") is False  # off
