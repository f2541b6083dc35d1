"""The fake Discord server works with the real discord.py: gateway, REST, resume, commands."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

with warnings.catch_warnings():
    # discord.player imports audioop, deprecated on Python 3.11-3.12.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands

from tests.support.fake_discord import (
    ADMIN_ROLE_ID,
    ADMIN_USER_ID,
    APPLICATION_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    EPHEMERAL,
    GUILD_ID,
    THREAD_ID,
    TOKEN,
    USER_ID,
    FakeDiscord,
)


class SmokeClient(discord.Client):
    """A plain client that queues what it receives."""

    def __init__(self, *, members: bool = False, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        intents.members = members
        super().__init__(intents=intents, guild_ready_timeout=0.2)
        self.tree = app_commands.CommandTree(self)
        self.received: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.own: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.edits: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.deleted: asyncio.Queue[discord.RawMessageDeleteEvent] = asyncio.Queue()

    async def on_message(self, message: discord.Message) -> None:
        """Keep others' messages apart from the bot's own, which Discord sends back too."""
        if message.author == self.user:
            self.own.put_nowait(message)
        else:
            self.received.put_nowait(message)

    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        """Keep edits (of cached messages)."""
        self.edits.put_nowait(after)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """Keep deletions."""
        self.deleted.put_nowait(payload)

    async def next_message(self, within: float = 5.0) -> discord.Message:
        """The next message from someone else."""
        return await asyncio.wait_for(self.received.get(), within)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1 with discord.py pointed at it."""
    async with FakeDiscord() as server:
        server.patch_discord(monkeypatch)
        yield server
        assert not server.unhandled, [f"{c.method} {c.path}" for c in server.unhandled]
        assert not server.errors


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, client: SmokeClient) -> AsyncIterator[SmokeClient]:
    """Run the client in a task until ready; close it cleanly afterwards."""

    async def run() -> None:
        async with client:
            await client.start(TOKEN)

    task = asyncio.create_task(run())
    try:
        await fake.wait_for(lambda: task.done() or fake.connected)
        if task.done():
            task.result()
        await asyncio.wait_for(client.wait_until_ready(), 5)
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


async def test_connects_and_caches_the_guild(fake: FakeDiscord) -> None:
    async with running(fake, SmokeClient()) as client:
        assert client.user is not None and client.user.id == BOT_ID
        assert client.application_id == APPLICATION_ID
        guild = client.get_guild(GUILD_ID)
        assert guild is not None and not guild.unavailable
        channel = guild.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        thread = guild.get_thread(THREAD_ID)
        assert isinstance(thread, discord.Thread) and thread.parent == channel
        admin = guild.get_role(ADMIN_ROLE_ID)
        assert admin is not None and admin.name == "admin" and admin.permissions.administrator
        assert guild.me is not None and guild.me.id == BOT_ID
        assert fake.last_identify is not None
        assert discord.Intents._from_value(fake.last_identify["intents"]).message_content
    assert fake.identify_count == 1
    assert fake.sent("GET", "/users/@me") and fake.sent("GET", "/oauth2/applications/@me")
    assert not fake.unhandled
    assert not fake.connected  # the client closed its socket


async def test_reply_to_a_mention_and_edit_through_a_429(fake: FakeDiscord) -> None:
    async with running(fake, SmokeClient()) as client:
        sent = await fake.message_create(f"<@{BOT_ID}> hello", mentions=[BOT_ID])
        message = await client.next_message()
        assert message.content == f"<@{BOT_ID}> hello"
        assert isinstance(message.channel, discord.TextChannel)
        assert isinstance(message.author, discord.Member) and message.author.id == USER_ID
        assert client.user in message.mentions
        assert message.id == int(sent["id"])

        reply = await message.reply("hi there", allowed_mentions=discord.AllowedMentions.none())
        (post,) = fake.sent("POST", f"/channels/{CHANNEL_ID}/messages")
        assert post["content"] == "hi there"
        assert post["allowed_mentions"] == {"parse": []}
        assert int(post["message_reference"]["message_id"]) == message.id
        assert reply.reference is not None and reply.reference.message_id == message.id
        assert reply.author == client.user
        echoed = await asyncio.wait_for(client.own.get(), 5)
        assert echoed.id == reply.id  # the bot's own message comes back as MESSAGE_CREATE

        fake.fail(("PATCH", rf"/channels/{CHANNEL_ID}/messages/\d+"), 429, retry_after=0.5)
        started = time.monotonic()
        edited = await reply.edit(content="hi there, edited")
        assert time.monotonic() - started >= 0.45
        attempts = fake.sent("PATCH", rf"/channels/{CHANNEL_ID}/messages/{reply.id}", failed=True)
        assert [a.status for a in attempts] == [429, 200]
        assert edited.content == "hi there, edited"
        assert fake.messages[reply.id]["content"] == "hi there, edited"
        assert (await asyncio.wait_for(client.edits.get(), 5)).content == "hi there, edited"
        # The reply chain can be walked back through REST.
        fetched = await message.channel.fetch_message(reply.id)
        assert fetched.reference is not None and fetched.reference.message_id == message.id


@pytest.mark.parametrize("how", ["close 4000", "cut tcp", "op 7 reconnect"])
async def test_a_dropped_connection_resumes(fake: FakeDiscord, how: str) -> None:
    async with running(fake, SmokeClient()) as client:
        if how == "close 4000":
            await fake.drop_connection()
        elif how == "cut tcp":
            await fake.drop_connection(code=None)
        else:
            await fake.request_reconnect()
        missed = await fake.message_create("sent while disconnected")
        await fake.wait_for(lambda: fake.resume_count == 1 and fake.connected)
        assert fake.identify_count == 1
        assert fake.connection_paths[-1] == "/resume-gateway"
        assert (await client.next_message()).id == int(missed["id"])
        after = await fake.message_create("sent after the resume")
        assert (await client.next_message()).id == int(after["id"])
        seqs = [f["s"] for f in fake.dispatched]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_message_delete_arrives_as_raw_delete(fake: FakeDiscord) -> None:
    async with running(fake, SmokeClient()) as client:
        sent = await fake.message_create("to be deleted", channel_id=THREAD_ID)
        message = await client.next_message()
        assert isinstance(message.channel, discord.Thread)
        await fake.message_delete(int(sent["id"]))
        event = await asyncio.wait_for(client.deleted.get(), 5)
        assert event.message_id == int(sent["id"]) and event.channel_id == THREAD_ID
        assert event.guild_id == GUILD_ID and event.cached_message is not None


async def test_a_direct_message_has_a_dm_channel(fake: FakeDiscord) -> None:
    async with running(fake, SmokeClient()) as client:
        await fake.message_create("hello in private", guild=False)
        message = await client.next_message()
        assert isinstance(message.channel, discord.DMChannel)
        assert message.channel.id == DM_CHANNEL_ID and message.guild is None
        assert message.content == "hello in private"
        assert not isinstance(message.author, discord.Member)
        upload = discord.File(io.BytesIO(b"file body"), "notes.txt")
        answer = await message.channel.send("private answer", file=upload)
        (post,) = fake.sent("POST", f"/channels/{DM_CHANNEL_ID}/messages")
        assert post["content"] == "private answer"
        assert [(f.filename, f.data) for f in post.files] == [("notes.txt", b"file body")]
        assert await answer.attachments[0].read() == b"file body"


async def test_a_slash_command_syncs_and_answers_ephemerally(fake: FakeDiscord) -> None:
    client = SmokeClient()
    seen: list[discord.Interaction[Any]] = []

    @client.tree.command(name="ask", description="Ask Qwen", guild=discord.Object(GUILD_ID))
    async def ask(interaction: discord.Interaction[Any], prompt: str) -> None:
        seen.append(interaction)
        await interaction.response.send_message(f"you asked {prompt}", ephemeral=True)
        await interaction.edit_original_response(content=f"answered {prompt}")
        await interaction.followup.send("and one more thing", ephemeral=True)

    async with running(fake, client):
        synced = await client.tree.sync(guild=discord.Object(GUILD_ID))
        assert [c.name for c in synced] == ["ask"]
        (put,) = fake.sent("PUT", f"/applications/{APPLICATION_ID}/guilds/{GUILD_ID}/commands")
        assert put.json[0]["name"] == "ask"

        payload = await fake.interaction_create(
            "ask", user_id=ADMIN_USER_ID, options={"prompt": "why"}
        )
        (callback,) = await fake.wait_for(lambda: fake.interaction_responses(payload))
        assert callback["type"] == 4
        assert callback["data"]["content"] == "you asked why"
        assert callback["data"]["flags"] & EPHEMERAL
        token = payload["token"]
        hook = f"/webhooks/{APPLICATION_ID}/{token}"
        await fake.wait_for(lambda: fake.sent("POST", hook))
        assert fake.sent("PATCH", hook + "/messages/@original")[0]["content"] == "answered why"
        interaction = seen[0]
        assert isinstance(interaction.user, discord.Member)
        assert interaction.user.guild_permissions.administrator
        assert isinstance(interaction.channel, discord.TextChannel)
    assert not fake.unhandled


async def test_a_global_command_in_a_dm_defers_then_follows_up(fake: FakeDiscord) -> None:
    client = SmokeClient()
    seen: list[discord.Interaction[Any]] = []

    @client.tree.command(name="ping", description="Ping")
    async def ping(interaction: discord.Interaction[Any]) -> None:
        seen.append(interaction)
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("pong")

    async with running(fake, client):
        await client.tree.sync()
        assert fake.sent("PUT", f"/applications/{APPLICATION_ID}/commands")
        with pytest.raises(LookupError):
            await fake.interaction_create("nope")
        payload = await fake.interaction_create("ping", guild=False)
        hook = f"/webhooks/{APPLICATION_ID}/{payload['token']}"
        (followup,) = await fake.wait_for(lambda: fake.sent("POST", hook))
        assert followup["content"] == "pong"
        assert fake.interaction_responses(payload)[0]["type"] == 5
        assert isinstance(seen[0].channel, discord.DMChannel)
        assert not isinstance(seen[0].user, discord.Member) and seen[0].user.id == USER_ID


async def test_a_late_interaction_answer_is_refused(fake: FakeDiscord) -> None:
    client = SmokeClient()
    errors: list[Exception] = []
    fake.interaction_deadline = 0.1

    @client.tree.command(name="slow", description="Slow", guild=discord.Object(GUILD_ID))
    async def slow(interaction: discord.Interaction[Any]) -> None:
        await asyncio.sleep(0.3)
        try:
            await interaction.response.send_message("too late")
        except discord.NotFound as error:
            errors.append(error)

    async with running(fake, client):
        await client.tree.sync(guild=discord.Object(GUILD_ID))
        await fake.interaction_create("slow")
        await fake.wait_for(lambda: errors)
        assert errors[0].code == 10062  # type: ignore[attr-defined]


async def test_members_intent_chunks_and_missing_content_intent_blanks(fake: FakeDiscord) -> None:
    async with running(fake, SmokeClient(members=True, message_content=False)) as client:
        guild = client.get_guild(GUILD_ID)
        assert guild is not None and guild.chunked
        assert guild.get_member(USER_ID) is not None
        await fake.message_create("no mention")
        assert (await client.next_message()).content == ""
        await fake.message_create(f"<@{BOT_ID}> with mention", mentions=[BOT_ID])
        assert (await client.next_message()).content == f"<@{BOT_ID}> with mention"


async def test_plain_text_frames_and_discord_limits(fake: FakeDiscord) -> None:
    fake.compress_frames = False
    fake.heartbeat_interval_ms = 100
    async with running(fake, SmokeClient()) as client:
        await fake.wait_for(lambda: fake.heartbeat_count >= 3)
        channel = client.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        fake.fail(("POST", r"/channels/\d+/typing"), 403)
        with pytest.raises(discord.Forbidden):
            await channel.typing()
        fake.fail(lambda call: call.method == "GET" and "/messages/" in call.path, 404)
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(1)
