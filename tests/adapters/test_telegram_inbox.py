"""Telegram and the inbox: nothing taken is lost to a shutdown, nothing is answered twice,
and a flood gets one notice."""

from __future__ import annotations

import asyncio
import copy
import time

from bot.formatting import restarted
from bot.i18n import translator
from engine.config import EngineSettings
from engine.engine import Engine
from tests.adapters.conftest import StartBot
from tests.adapters.test_telegram_chat import GROUP, finals
from tests.support.fake_telegram import FakeBotAPI

EN_TEXTS = translator("en")


async def test_an_update_delivered_again_after_a_restart_is_answered_once(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    first = await start_bot()
    update = fake_api.message("What is two plus two?")
    await fake_api.wait_for(lambda: finals(fake_api, 1001))
    await first.shutdown()

    await start_bot()
    fake_api.push(copy.deepcopy(update))  # Telegram sends the same update again
    fake_api.message("And three plus three?")
    # The chat's updates are handled in order: once the second is answered, the first
    # (delivered again before it) has been dealt with.
    await fake_api.wait_for(lambda: len(finals(fake_api, 1001)) == 2)
    await asyncio.sleep(0.3)
    assert len(finals(fake_api, 1001)) == 2


async def test_answers_cancelled_by_a_shutdown_are_given_after_the_restart(
    engine_settings: EngineSettings, start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    try:
        first = await start_bot(use_engine=slow, shutdown_grace_s=0.2, bot={"rate_limit_burst": 9})
        private = fake_api.message("a very long answer please")
        group = fake_api.message(
            "@qwen_test_bot a very long answer for the group",
            chat_id=GROUP,
            chat_type="supergroup",
            entities=[{"type": "mention", "offset": 0, "length": 14}],
        )
        # Both answers are being written: a draft in private, a message edited in the group.
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1001))
        partial = await fake_api.wait_for(lambda: fake_api.sent("sendMessage", GROUP))
        await first.shutdown()  # the grace period ends long before the answers would
        assert not finals(fake_api, 1001) and not finals(fake_api, GROUP)
    finally:
        await slow.close()

    restarted = time.monotonic()
    await start_bot(bot={"rate_limit_burst": 9})
    for update in (private, group):
        chat = update["message"]["chat"]["id"]
        await fake_api.wait_for(lambda chat=chat: finals(fake_api, chat))
        answer = [c for c in fake_api.sent("sendMessage", chat) if c.at > restarted]
        # Sent as a reply to the question, so the asker sees what it answers.
        assert answer[0]["reply_parameters"]["message_id"] == update["message"]["message_id"]
    # The group's half-written answer was taken back, not left beside the whole one.
    deleted = fake_api.sent("deleteMessage", GROUP)
    assert [int(c["message_id"]) for c in deleted] == [partial[0].result["message_id"]]
    await asyncio.sleep(0.3)
    assert len(finals(fake_api, 1001)) == len(finals(fake_api, GROUP)) == 1


async def test_too_old_a_question_gets_an_apology_after_the_restart(
    engine_settings: EngineSettings, start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    try:
        first = await start_bot(use_engine=slow, shutdown_grace_s=0.1)
        update = fake_api.message("a very long answer please")
        await fake_api.wait_for(lambda: fake_api.sent("sendMessageDraft", 1001))
        await first.shutdown()
    finally:
        await slow.close()

    await start_bot(bot={"replay_within_s": 0})  # everything taken before is too old
    sorry = await fake_api.wait_for(
        lambda: [c for c in fake_api.sent("sendMessage", 1001) if c["text"] == restarted(EN_TEXTS)]
    )
    assert sorry[0]["reply_parameters"]["message_id"] == update["message"]["message_id"]
    await asyncio.sleep(0.3)
    assert not finals(fake_api, 1001)


async def test_forty_messages_in_a_burst_get_one_slow_down_notice(
    start_bot: StartBot, fake_api: FakeBotAPI
) -> None:
    await start_bot(bot={"rate_limit_burst": 3})
    for n in range(40):
        fake_api.message(f"message {n}")
    await fake_api.wait_for(lambda: len(finals(fake_api, 1001)) == 3)
    await asyncio.sleep(0.5)
    notices = [c for c in fake_api.sent("sendMessage", 1001) if "quickly" in c["text"]]
    assert len(notices) == 1
    assert len(finals(fake_api, 1001)) == 3
