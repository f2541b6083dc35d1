"""Discord users' view: mentions, DMs, reply chains, threads, limits, deletes, commands."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.settings import DEFAULT_SYSTEM_PROMPT
from engine.config import EngineSettings
from engine.engine import Engine
from engine.events import ChatTurn, GenerationRequest
from tests.adapters.discord_fixtures import StartDiscord
from tests.support.fake_discord import (
    ADMIN_ROLE_ID,
    BOT_ID,
    CHANNEL_ID,
    EPHEMERAL,
    THREAD_ID,
    FakeDiscord,
)

MENTION = f"<@{BOT_ID}>"


def finals(fake: FakeDiscord, channel_id: int = CHANNEL_ID) -> list[str]:
    """Current texts of the bot's messages that carry the speed footer."""
    return [m["content"] for m in fake.bot_messages(channel_id) if "⚡" in m["content"]]


def writes(fake: FakeDiscord) -> list[Any]:
    """Every message the bot created or edited."""
    return fake.sent("POST", r"/channels/\d+/messages") + fake.sent(
        "PATCH", r"/channels/\d+/messages/\d+"
    )


async def prime(engine: Engine, *turns: ChatTurn) -> str:
    """Answer a conversation directly, so the same prompt through Discord is a cache hit."""
    request = GenerationRequest((ChatTurn("system", DEFAULT_SYSTEM_PROMPT), *turns))
    return (await engine.generate(request)).text


async def test_mention_gets_a_streamed_reply_that_pings_nobody(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    await start_discord()
    asked = await fake_discord.message_create(f"{MENTION} hello there", mentions=[BOT_ID])
    final = await fake_discord.wait_for(lambda: finals(fake_discord))
    assert final[0].endswith("tokens")  # the footer, as small text (-# ...)
    first = fake_discord.sent("POST", rf"/channels/{CHANNEL_ID}/messages")[0]
    assert int(first["message_reference"]["message_id"]) == int(asked["id"])
    assert fake_discord.sent("POST", rf"/channels/{CHANNEL_ID}/typing")
    for call in writes(fake_discord):
        assert call["allowed_mentions"]["parse"] == []
        assert call["allowed_mentions"].get("replied_user") in (False, None)


async def test_unmentioned_and_bot_messages_are_ignored_dms_are_answered(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    await start_discord()
    await fake_discord.message_create("just people talking")
    await fake_discord.message_create(
        f"{MENTION} from a bot", mentions=[BOT_ID], author_id=9500, bot_author=True
    )
    dm = await fake_discord.message_create("hi in private", guild=False)
    await fake_discord.wait_for(lambda: finals(fake_discord, int(dm["channel_id"])))
    await asyncio.sleep(0.3)
    assert not fake_discord.bot_messages(CHANNEL_ID)


async def test_reply_chain_is_the_prompt(
    start_discord: StartDiscord, fake_discord: FakeDiscord, engine: Engine
) -> None:
    await start_discord()
    question = await fake_discord.message_create(f"{MENTION} What is a dragon?", mentions=[BOT_ID])
    await fake_discord.wait_for(lambda: finals(fake_discord))
    answer = fake_discord.bot_messages(CHANNEL_ID)[0]
    answer_text = answer["content"].rsplit("\n\n-# ", 1)[0]
    expected = (
        ChatTurn("user", "What is a dragon?"),
        ChatTurn("assistant", answer_text),  # the footer is not part of the conversation
        ChatTurn("user", "Can it cook?"),
    )
    await prime(engine, *expected)
    await fake_discord.message_create("Can it cook?", referenced_message=answer)
    final = await fake_discord.wait_for(
        lambda: len(finals(fake_discord)) == 2 and finals(fake_discord)
    )
    assert "cached" in final[-1]  # exactly the conversation above reached the model
    assert question["content"].endswith("What is a dragon?")


async def test_threads_keep_their_own_history(
    start_discord: StartDiscord, fake_discord: FakeDiscord, engine: Engine
) -> None:
    await start_discord()
    await fake_discord.message_create(
        f"{MENTION} thread talk", mentions=[BOT_ID], channel_id=THREAD_ID
    )
    await fake_discord.wait_for(lambda: finals(fake_discord, THREAD_ID))
    await prime(engine, ChatTurn("user", "hello"))
    await fake_discord.message_create(f"{MENTION} hello", mentions=[BOT_ID])
    final = await fake_discord.wait_for(lambda: finals(fake_discord))
    assert "cached" in final[0]  # the channel's history did not include the thread's


async def test_long_answer_is_split_under_2000_characters(
    engine_settings: EngineSettings, start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    long = Engine(engine_settings.model_copy(update={"max_new_tokens": 1200}))
    await long.start()
    try:
        await start_discord(use_engine=long)
        await fake_discord.message_create(f"{MENTION} write a lot", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: finals(fake_discord), 120)
    finally:
        await long.close()
    parts = fake_discord.bot_messages(CHANNEL_ID)
    assert len(parts) >= 3
    assert all(len(p["content"]) <= 2000 for p in parts)
    assert all(len(c.get("content") or "") <= 2000 for c in writes(fake_discord))


async def test_429_on_an_edit_and_on_the_first_send_still_deliver(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    await start_discord()
    fake_discord.fail(("POST", rf"/channels/{CHANNEL_ID}/messages"), 429, retry_after=0.3)
    fake_discord.fail(("PATCH", rf"/channels/{CHANNEL_ID}/messages/\d+"), 429, retry_after=0.3)
    await fake_discord.message_create(f"{MENTION} despite limits", mentions=[BOT_ID])
    await fake_discord.wait_for(lambda: finals(fake_discord), 30)
    assert not fake_discord.sent("POST", rf"/channels/{CHANNEL_ID}/messages", failed=True)[0].ok


async def test_dropped_gateway_resumes_and_keeps_answering(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    await start_discord()
    await fake_discord.drop_connection()
    await fake_discord.wait_for(lambda: fake_discord.resume_count == 1, 30)
    await fake_discord.message_create(f"{MENTION} still there?", mentions=[BOT_ID])
    await fake_discord.wait_for(lambda: finals(fake_discord), 30)
    assert fake_discord.identify_count == 1


async def test_deleting_the_question_cancels_the_answer(
    engine_settings: EngineSettings, start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    try:
        await start_discord(use_engine=slow)
        asked = await fake_discord.message_create(f"{MENTION} long story", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(CHANNEL_ID))
        await fake_discord.message_delete(int(asked["id"]))
        await fake_discord.wait_for(lambda: not fake_discord.bot_messages(CHANNEL_ID))
        await fake_discord.wait_for(lambda: not slow.busy)
        writes_after = len(writes(fake_discord))
        await asyncio.sleep(0.3)
        assert len(writes(fake_discord)) == writes_after and not finals(fake_discord)
    finally:
        await slow.close()


async def test_a_question_deleted_while_its_answer_is_posted_leaves_no_answer(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    # Discord has created the answer but its reply has not reached the bot when the delete
    # arrives: the answer must still be found and taken back.
    posted = ("POST", rf"/channels/{CHANNEL_ID}/messages")
    fake_discord.slow(posted, 1.0)
    await start_discord()
    asked = await fake_discord.message_create(f"{MENTION} hello there", mentions=[BOT_ID])
    await fake_discord.wait_for(lambda: fake_discord.sent(*posted, failed=True))
    await fake_discord.message_delete(int(asked["id"]))
    await fake_discord.wait_for(lambda: fake_discord.sent("DELETE", rf"/channels/{CHANNEL_ID}/.*"))
    assert not fake_discord.bot_messages(CHANNEL_ID)
    assert len(fake_discord.sent(*posted, failed=True)) == 1


async def test_stats_slash_command_is_for_admins(
    start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    await start_discord(admin_role_ids=frozenset({ADMIN_ROLE_ID}))
    refused = await fake_discord.interaction_create("stats", roles=[])
    shown = await fake_discord.interaction_create("stats", roles=[ADMIN_ROLE_ID])
    helped = await fake_discord.interaction_create("help")
    for interaction in (refused, shown, helped):
        await fake_discord.wait_for(lambda i=interaction: fake_discord.interaction_responses(i))
    answer = {
        name: fake_discord.interaction_responses(i)[0]["data"]
        for name, i in (("refused", refused), ("shown", shown), ("help", helped))
    }
    assert all(a["flags"] & EPHEMERAL for a in answer.values())
    assert "admins" in answer["refused"]["content"]
    assert "Requests" in answer["shown"]["content"]
    assert "/reset" in answer["help"]["content"]
    synced = {c["name"] for c in fake_discord.commands.values()}
    assert synced == {"help", "reset", "stats"}


async def test_shutdown_with_a_reply_in_flight(
    engine_settings: EngineSettings, start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    slow = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await slow.start()
    try:
        running = await start_discord(use_engine=slow, shutdown_grace_s=0.2)
        await fake_discord.message_create(f"{MENTION} go on and on", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(CHANNEL_ID))
        await running.shutdown()
        assert running.task.exception() is None
    finally:
        await slow.close()
    assert not slow.busy


async def test_reset_slash_command_clears_the_thread_history(
    start_discord: StartDiscord, fake_discord: FakeDiscord, engine: Engine
) -> None:
    await start_discord()
    await fake_discord.message_create(
        f"{MENTION} remember mango", mentions=[BOT_ID], channel_id=THREAD_ID
    )
    await fake_discord.wait_for(lambda: finals(fake_discord, THREAD_ID))
    reset = await fake_discord.interaction_create("reset", channel_id=THREAD_ID)
    await fake_discord.wait_for(lambda: fake_discord.interaction_responses(reset))
    assert "forgot" in fake_discord.interaction_responses(reset)[0]["data"]["content"]
    await prime(engine, ChatTurn("user", "what fruit?"))
    await fake_discord.message_create(
        f"{MENTION} what fruit?", mentions=[BOT_ID], channel_id=THREAD_ID
    )
    final = await fake_discord.wait_for(
        lambda: len(finals(fake_discord, THREAD_ID)) == 2 and finals(fake_discord, THREAD_ID)
    )
    assert "cached" in final[-1]  # nothing of the thread's earlier talk was left


async def test_queue_position_then_a_polite_refusal_when_full(
    engine_settings: EngineSettings, start_discord: StartDiscord, fake_discord: FakeDiscord
) -> None:
    # One reply at a time (a full batch), so the second chat waits in the queue.
    one_at_a_time = {"queue_size": 1, "max_new_tokens": 400, "max_batch": 1}
    busy = Engine(engine_settings.model_copy(update=one_at_a_time))
    await busy.start()
    try:
        await start_discord(use_engine=busy, bot={"rate_limit_burst": 10})
        await fake_discord.message_create(f"{MENTION} first", mentions=[BOT_ID])
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(CHANNEL_ID))
        await fake_discord.message_create(
            f"{MENTION} second", mentions=[BOT_ID], channel_id=THREAD_ID
        )
        queued = await fake_discord.wait_for(
            lambda: [c for c in writes(fake_discord) if "queued" in (c.get("content") or "")]
        )
        assert "1 ahead" in queued[0]["content"]
        dm = await fake_discord.message_create("third", guild=False)
        refused = await fake_discord.wait_for(
            lambda: fake_discord.bot_messages(int(dm["channel_id"]))
        )
        assert "wait too long" in refused[0]["content"]
        await fake_discord.wait_for(
            lambda: finals(fake_discord) and finals(fake_discord, THREAD_ID), 60
        )
    finally:
        await busy.close()
