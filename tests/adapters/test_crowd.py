"""A crowd is queued, not refused: people paced like people, through the Telegram fake."""

from __future__ import annotations

import asyncio
import random

from engine.config import EngineSettings
from engine.engine import Engine
from tests.adapters.conftest import StartBot
from tests.adapters.test_telegram_chat import finals
from tests.support.fake_telegram import FakeBotAPI

CHATS = 20
TURNS = 3


async def test_a_paced_crowd_is_answered_in_full_with_the_default_settings(
    engine_settings: EngineSettings, start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    # Default queue and admission settings; replies long enough that the queue fills.
    crowd = Engine(engine_settings.model_copy(update={"max_new_tokens": 32}))
    await crowd.start()
    pacing = random.Random(7)
    try:
        await start_bot(use_engine=crowd)

        async def person(chat: int) -> None:
            for turn in range(TURNS):
                fake_api.message(f"Question {turn} from chat {chat}", chat_id=chat, user_id=chat)
                await fake_api.wait_for(lambda t=turn: len(finals(fake_api, chat)) > t, within=240)
                await asyncio.sleep(pacing.uniform(0.1, 0.6))  # reading, then typing

        # Everyone asks their first question at once: three times the batch waits.
        await asyncio.gather(*(person(1000 + n) for n in range(CHATS)))
        snapshot = crowd.snapshot()
    finally:
        await crowd.close()
    sent = fake_api.sent("sendMessage")
    assert not [c for c in sent if "wait too long" in c["text"] or "busy" in c["text"]]
    assert sum(len(finals(fake_api, 1000 + n)) for n in range(CHATS)) == CHATS * TURNS
    assert snapshot.queue_depth_max > 8  # more waited at once than the old limit allowed
    drafts = [c["text"] for c in fake_api.sent("sendMessageDraft")]
    assert any(text.startswith("⏳ queued, ") for text in drafts)  # everyone saw their place
