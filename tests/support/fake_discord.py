"""A fake Discord REST API and gateway on 127.0.0.1 for the real discord.py to talk to.

discord.py has no base-URL option, so `patch_discord(monkeypatch)` points `Route.BASE` and
`DiscordWebSocket.DEFAULT_GATEWAY` here. The fake records every REST call and every gateway
op, keeps a store of all messages (so reply chains can be walked), answers with realistic
objects, and can inject failures: 429 with retry_after (and the headers discord.py needs to
treat it as a rate limit rather than a Cloudflare ban), 4xx/5xx, or slow answers.

What it mimics beyond the happy path, because an adapter must cope with it on real Discord:
- the bot's own messages come back as MESSAGE_CREATE (edits as MESSAGE_UPDATE);
- without the MESSAGE_CONTENT intent, guild messages that do not mention the bot arrive
  with empty content; without GUILD_MESSAGES / DIRECT_MESSAGES they do not arrive at all;
- content over 2000 characters, empty messages and replies to unknown messages are 400s;
- an interaction must be answered within `interaction_deadline` seconds and only once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import mimetypes
import re
import secrets
import time
import warnings
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, WSMsgType, web

if TYPE_CHECKING:
    import pytest

TOKEN = "MTAwMDA.fake-discord-token.that-must-never-be-logged"
BOT_ID = 5000
APPLICATION_ID = 5100
GUILD_ID = 7000
CHANNEL_ID = 7001
THREAD_ID = 7002
ADMIN_ROLE_ID = 7100
MEMBER_ROLE_ID = 7101
DM_CHANNEL_ID = 8001
USER_ID = 9001
ADMIN_USER_ID = 9002

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
MAX_CONTENT = 2000
EPHEMERAL = 1 << 6
LOADING = 1 << 7

# Gateway intents the fake enforces.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# Permission bits.
ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = (
    (1 << 6)  # add reactions
    | (1 << 10)  # view channel
    | (1 << 11)  # send messages
    | (1 << 14)  # embed links
    | (1 << 15)  # attach files
    | (1 << 16)  # read message history
    | (1 << 31)  # use application commands
    | (1 << 38)  # send messages in threads
)

# Message types.
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19
MESSAGE_CHAT_INPUT_COMMAND = 20


class ApiError(Exception):
    """An error answer from a route handler."""

    def __init__(
        self, status: int, message: str, code: int = 0, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


@dataclass
class SentFile:
    """A file the bot uploaded in a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request the bot made (path without the /api/v10 prefix and query)."""

    method: str
    path: str
    json: Any = None
    query: dict[str, str] = field(default_factory=dict)
    files: list[SentFile] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)
    ok: bool = True  # False when the fake answered with an error
    status: int = 200

    def __getitem__(self, key: str) -> Any:
        return self.json[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Like dict.get on the JSON body (None-safe)."""
        return self.json.get(key, default) if isinstance(self.json, dict) else default


Matcher = tuple[str, str] | Callable[[Call], bool]


@dataclass
class Failure:
    """An error answer to give instead of the real one."""

    status: int
    body: dict[str, Any] | None = None
    retry_after: float = 0.5
    is_global: bool = False
    when: Callable[[Call], bool] = lambda call: True


@dataclass
class _Delay:
    """A pause between a matching call taking effect and its answer."""

    seconds: float
    when: Callable[[Call], bool]


@dataclass
class _Session:
    """A gateway session: what RESUME can pick up again."""

    session_id: str
    intents: int
    seq: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumable: bool = True


@dataclass(eq=False)
class _Connection:
    """One open gateway websocket."""

    ws: web.WebSocketResponse
    path: str
    transport: asyncio.BaseTransport | None = None
    compressor: Any = None  # zlib compress object when the client asked for zlib-stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    live: bool = False  # dispatches go out directly (after READY or a finished RESUME)
    dropped: bool = False


@dataclass
class _Interaction:
    """An interaction the fake sent, and how the bot answered it."""

    id: int
    token: str
    channel_id: int
    guild_id: int | None
    user: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    response_type: int | None = None
    original_id: int | None = None


def _match(matcher: Matcher) -> Callable[[Call], bool]:
    """A predicate from (http_method, path_regex) or a predicate itself."""
    if callable(matcher):
        return matcher
    method, pattern = matcher
    regex = re.compile(pattern)
    return lambda call: call.method == method.upper() and bool(regex.fullmatch(call.path))


def _now_iso() -> str:
    """Discord's timestamp format."""
    return datetime.now(UTC).isoformat()


def _json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON with content type exactly application/json: with a charset discord.py reads text."""
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _default_error_body(failure: Failure) -> dict[str, Any]:
    """Discord's usual body for an injected status."""
    if failure.status == 429:
        return {
            "message": "You are being rate limited.",
            "retry_after": failure.retry_after,
            "global": failure.is_global,
        }
    messages = {
        400: ("Invalid Form Body", 50035),
        401: ("401: Unauthorized", 0),
        403: ("Missing Permissions", 50013),
        404: ("404: Not Found", 0),
    }
    message, code = messages.get(failure.status, ("Internal Server Error", 0))
    return {"message": message, "code": code}


def _option_type(value: Any) -> int:
    """The application command option type for a Python value."""
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


class FakeDiscord:
    """The fake server; `rest_base` and `gateway_url` are what discord.py gets patched to."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.unhandled: list[Call] = []  # calls to routes the fake does not know (404)
        self.errors: list[BaseException] = []  # bugs in the fake itself (answered 400)
        self.gateway_received: list[dict[str, Any]] = []  # every op the client sent
        self.dispatched: list[dict[str, Any]] = []  # every DISPATCH frame, all sessions
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.connection_count = 0
        self.connection_paths: list[str] = []
        self.last_identify: dict[str, Any] | None = None
        # Knobs.
        self.heartbeat_interval_ms = 41250
        self.ack_heartbeats = True
        self.compress_frames = True  # honour ?compress=zlib-stream with binary frames
        self.echo_own_messages = True  # the bot's own messages come back as gateway events
        self.interaction_deadline: float | None = 3.0
        self.disallowed_intents = 0  # privileged intents not enabled: IDENTIFY closes 4014
        self.preferred_locale = "en-US"  # the server's language, as its admins set it
        # State.
        self.users: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[str, Any]] = {}  # guild members by user id
        self.roles: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}  # guild channels, threads and DMs
        self.messages: dict[int, dict[str, Any]] = {}  # REST-shaped, by id
        self.commands: dict[int, dict[str, Any]] = {}  # synced application commands by id
        self.interactions: dict[str, _Interaction] = {}  # by token
        self.attachments: dict[int, SentFile] = {}
        self._dm_by_user: dict[int, int] = {}
        self._failures: list[Failure] = []
        self._delays: list[_Delay] = []
        self._session: _Session | None = None
        self._conn: _Connection | None = None
        self._open: set[_Connection] = set()
        self._last_snowflake = 0
        self._ids = itertools.count(20000)
        self._runner: web.AppRunner | None = None
        self._routes = self._route_table()
        self.root_url = ""
        self.rest_base = ""
        self.gateway_url = ""
        self.resume_gateway_url = ""
        self._seed()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume-gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root_url = f"http://127.0.0.1:{port}"
        self.rest_base = self.root_url + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"
        self.resume_gateway_url = f"ws://127.0.0.1:{port}/resume-gateway"

    async def stop(self) -> None:
        """Close open websockets and the server."""
        for conn in list(self._open):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await asyncio.wait_for(conn.ws.close(code=1001), 2)
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def patch_discord(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point discord.py's REST base and default gateway at this fake (start() first)."""
        with warnings.catch_warnings():
            # discord.player imports audioop, deprecated on Python 3.11-3.12.
            warnings.simplefilter("ignore", DeprecationWarning)
            import discord.gateway
            import discord.http
        import yarl

        monkeypatch.setattr(discord.http.Route, "BASE", self.rest_base)
        monkeypatch.setattr(
            discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url)
        )

    # ------------------------------------------------------------------ the world

    def _seed(self) -> None:
        """The bot, two people, one guild with a channel and a thread, one DM."""
        self.add_user(BOT_ID, "qwen", bot=True, roles=())
        self.add_user(USER_ID, "lan", roles=(MEMBER_ROLE_ID,))
        self.add_user(ADMIN_USER_ID, "mod", roles=(ADMIN_ROLE_ID,))
        for role_id, name, permissions, position in (
            (GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, 0),
            (ADMIN_ROLE_ID, "admin", ADMINISTRATOR, 2),
            (MEMBER_ROLE_ID, "member", 0, 1),
        ):
            self.roles[role_id] = {
                "id": str(role_id),
                "name": name,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "position": position,
                "permissions": str(permissions),
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        self.channels[CHANNEL_ID] = {
            "id": str(CHANNEL_ID),
            "type": 0,
            "guild_id": str(GUILD_ID),
            "name": "general",
            "position": 0,
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "permission_overwrites": [],
            "flags": 0,
        }
        now = _now_iso()
        self.channels[THREAD_ID] = {
            "id": str(THREAD_ID),
            "type": 11,
            "guild_id": str(GUILD_ID),
            "parent_id": str(CHANNEL_ID),
            "owner_id": str(USER_ID),
            "name": "qwen-thread",
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        }
        self.open_dm(USER_ID, DM_CHANNEL_ID)

    def add_user(
        self,
        user_id: int,
        username: str,
        *,
        bot: bool = False,
        roles: Iterable[int] = (),
        member: bool = True,
    ) -> dict[str, Any]:
        """Add a user (and by default a guild member with these roles); returns the user."""
        user: dict[str, Any] = {
            "id": str(user_id),
            "username": username,
            "global_name": None if bot else username.title(),
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
        }
        if bot:
            user["bot"] = True
        self.users[user_id] = user
        if member:
            self.members[user_id] = {
                "roles": [str(r) for r in roles],
                "nick": None,
                "avatar": None,
                "joined_at": _now_iso(),
                "premium_since": None,
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
                "communication_disabled_until": None,
            }
        return user

    def open_dm(self, user_id: int, channel_id: int | None = None) -> dict[str, Any]:
        """The DM channel with a user, created on first use."""
        if user_id in self._dm_by_user:
            return self.channels[self._dm_by_user[user_id]]
        channel_id = channel_id or next(self._ids)
        self._user(user_id)
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": 1,
            "recipients": [self.users[user_id]],
            "last_message_id": None,
            "flags": 0,
        }
        self._dm_by_user[user_id] = channel_id
        return self.channels[channel_id]

    def _user(self, user_id: int, *, bot: bool = False) -> dict[str, Any]:
        """A user payload, inventing the user (and member) when unknown."""
        if user_id not in self.users:
            self.add_user(user_id, f"user{user_id}", bot=bot)
        return self.users[user_id]

    def _member(
        self, user_id: int, *, with_user: bool = True, roles: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """A guild member payload (with permissions, as interactions carry)."""
        self._user(user_id)
        member = dict(self.members[user_id])
        if roles is not None:
            member["roles"] = [str(r) for r in roles]
        if with_user:
            member["user"] = self.users[user_id]
        return member

    def _permissions(self, roles: Iterable[str | int]) -> int:
        """@everyone plus the roles' permissions."""
        value = int(self.roles[GUILD_ID]["permissions"])
        for role_id in roles:
            role = self.roles.get(int(role_id))
            if role is not None:
                value |= int(role["permissions"])
        return value

    def _guild_of(self, channel_id: int) -> int | None:
        """The guild id of a channel, None for DMs."""
        channel = self.channels.get(channel_id)
        return int(channel["guild_id"]) if channel and "guild_id" in channel else None

    def guild_payload(self) -> dict[str, Any]:
        """The guild object as REST returns it."""
        return {
            "id": str(GUILD_ID),
            "name": "Qwen Test Guild",
            "icon": None,
            "banner": None,
            "splash": None,
            "discovery_splash": None,
            "description": None,
            "owner_id": str(ADMIN_USER_ID),
            "roles": list(self.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.preferred_locale,
            "system_channel_id": str(CHANNEL_ID),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
        }

    def guild_create_payload(self) -> dict[str, Any]:
        """GUILD_CREATE: the guild with channels, active threads, roles and members."""
        guild_channels = [
            c for c in self.channels.values() if "guild_id" in c and c["type"] not in (10, 11, 12)
        ]
        threads = [c for c in self.channels.values() if c["type"] in (10, 11, 12)]
        return {
            **self.guild_payload(),
            "joined_at": _now_iso(),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "members": [self._member(uid) for uid in self.members],
            "channels": guild_channels,
            "threads": threads,
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # ------------------------------------------------------------------ snowflakes, messages

    def snowflake(self) -> int:
        """A new, increasing id with a real timestamp in it."""
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(value, self._last_snowflake + 1)
        return self._last_snowflake

    def _new_message(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        message_id: int | None = None,
        message_type: int = MESSAGE_DEFAULT,
        mentions: Iterable[int] = (),
        mention_roles: Iterable[int] = (),
        flags: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store and return a REST-shaped message."""
        message_id = message_id or self.snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "type": message_type,
            "author": self._user(author_id),
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self._user(uid) for uid in dict.fromkeys(mentions)],
            "mention_roles": [str(r) for r in mention_roles],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": flags,
            **(extra or {}),
        }
        self.messages[message_id] = message
        channel = self.channels.get(channel_id)
        if channel is not None:
            channel["last_message_id"] = str(message_id)
        return message

    def _reference(self, message_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """message_reference and referenced_message for a reply to a stored message."""
        target = self.messages[message_id]
        channel_id = int(target["channel_id"])
        reference: dict[str, Any] = {
            "type": 0,
            "message_id": str(message_id),
            "channel_id": str(channel_id),
        }
        guild_id = self._guild_of(channel_id)
        if guild_id is not None:
            reference["guild_id"] = str(guild_id)
        resolved = {k: v for k, v in target.items() if k != "referenced_message"}
        return reference, resolved

    def _attach(self, channel_id: int, files: Iterable[SentFile]) -> list[dict[str, Any]]:
        """Attachment objects for uploaded files, served under /attachments."""
        result = []
        for file in files:
            attachment_id = self.snowflake()
            self.attachments[attachment_id] = file
            url = f"{self.root_url}/attachments/{channel_id}/{attachment_id}/{file.filename}"
            result.append(
                {
                    "id": str(attachment_id),
                    "filename": file.filename,
                    "size": len(file.data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": file.content_type,
                }
            )
        return result

    def _gateway_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as MESSAGE_CREATE/UPDATE carries it (guild_id, member, intents)."""
        data = dict(message)
        channel_id = int(message["channel_id"])
        guild_id = self._guild_of(channel_id)
        author_id = int(message["author"]["id"])
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            if author_id in self.members and "webhook_id" not in message:
                data["member"] = self._member(author_id, with_user=False)
            data["mentions"] = [
                {**m, "member": self._member(int(m["id"]), with_user=False)}
                if int(m["id"]) in self.members
                else m
                for m in message["mentions"]
            ]
        intents = self._session.intents if self._session else 0
        mentioned = any(int(m["id"]) == BOT_ID for m in message["mentions"])
        if (
            guild_id is not None
            and not intents & INTENT_MESSAGE_CONTENT
            and author_id != BOT_ID
            and not mentioned
        ):
            data.update(content="", embeds=[], attachments=[], components=[])
        return data

    def _wants(self, channel_id: int) -> bool:
        """Whether the session's intents let a message event in this channel through."""
        intents = self._session.intents if self._session else 0
        needed = (
            INTENT_DIRECT_MESSAGES if self._guild_of(channel_id) is None else INTENT_GUILD_MESSAGES
        )
        return bool(intents & needed)

    async def _echo(self, event: str, message: dict[str, Any]) -> None:
        """Send the bot's own message activity back, as Discord does."""
        if (
            self.echo_own_messages
            and self._session is not None
            and self._wants(int(message["channel_id"]))
            and not message["flags"] & EPHEMERAL
        ):
            await self.dispatch(event, self._gateway_message(message))

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Stored messages in a channel, oldest first (deleted ones are gone)."""
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    def bot_messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Messages the bot authored (current content after edits), oldest first."""
        return [
            m
            for m in self.messages.values()
            if int(m["author"]["id"]) == BOT_ID
            and (channel_id is None or int(m["channel_id"]) == channel_id)
        ]

    # ------------------------------------------------------------------ test controls

    def fail(
        self,
        match: Matcher,
        status: int,
        body: dict[str, Any] | None = None,
        times: int = 1,
        *,
        retry_after: float = 0.5,
        is_global: bool = False,
    ) -> None:
        """Answer the next `times` matching calls with an error; match is (method, regex)."""
        failure = Failure(status, body, retry_after, is_global, _match(match))
        self._failures.extend([failure] * times)

    def slow(self, match: Matcher, seconds: float, times: int = 1) -> None:
        """Answer the next `times` matching calls `seconds` after they took effect."""
        self._delays.extend([_Delay(seconds, _match(match))] * times)

    def sent(self, method: str, path: str = ".*", *, failed: bool = False) -> list[Call]:
        """Successful calls (or with failed=True all attempts) whose path fullmatches `path`."""
        regex = re.compile(path)
        return [
            c
            for c in self.calls
            if c.method == method.upper() and regex.fullmatch(c.path) and (failed or c.ok)
        ]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0) -> Any:
        """Poll until predicate() is truthy; returns its value."""
        deadline = time.monotonic() + within
        while not (result := predicate()):
            if time.monotonic() > deadline:
                calls = [f"{c.method} {c.path} {c.status}" for c in self.calls]
                raise AssertionError(f"condition not met; calls so far: {calls}")
            await asyncio.sleep(0.02)
        return result

    @property
    def connected(self) -> bool:
        """Whether a client holds a live (identified or resumed) gateway connection."""
        return self._conn is not None and self._conn.live

    @property
    def session_id(self) -> str | None:
        """The current gateway session id."""
        return self._session.session_id if self._session else None

    @property
    def sequence(self) -> int:
        """The last sequence number sent in the current session."""
        return self._session.seq if self._session else 0

    # ------------------------------------------------------------------ gateway events

    async def dispatch(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send a DISPATCH (kept for RESUME replay while disconnected); returns the frame."""
        session = self._session
        if session is None:
            raise RuntimeError("no gateway session yet: the client has not identified")
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.history.append(frame)
        self.dispatched.append(frame)
        conn = self._conn
        if conn is not None and conn.live and conn.session is session:
            await self._send(conn, frame)
        return frame

    async def message_create(
        self,
        content: str,
        *,
        channel_id: int | None = None,
        author_id: int = USER_ID,
        guild: bool | None = None,
        mentions: Iterable[int] = (),
        mention_roles: Iterable[int] = (),
        referenced_message: int | dict[str, Any] | None = None,
        message_id: int | None = None,
        bot_author: bool = False,
        reply_ping: bool = True,
        attachments: Iterable[tuple[str, bytes]] = (),
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A user message (guild channel by default, their DM with guild=False); the payload.

        A reply to a message (id or payload) pings its author when `reply_ping`, as Discord's
        client does by default. Without the right intents the event is not sent.
        """
        if channel_id is None:
            channel_id = CHANNEL_ID if guild in (None, True) else int(self.open_dm(author_id)["id"])
        if channel_id not in self.channels:
            raise KeyError(f"unknown channel {channel_id}")
        self._user(author_id, bot=bot_author)
        mention_ids = list(mentions)
        fields: dict[str, Any] = dict(extra or {})
        message_type = MESSAGE_DEFAULT
        if referenced_message is not None:
            ref_id = (
                int(referenced_message["id"])
                if isinstance(referenced_message, dict)
                else referenced_message
            )
            fields["message_reference"], fields["referenced_message"] = self._reference(ref_id)
            message_type = MESSAGE_REPLY
            if reply_ping:
                mention_ids.append(int(fields["referenced_message"]["author"]["id"]))
        message = self._new_message(
            channel_id,
            author_id,
            content,
            message_id=message_id,
            message_type=message_type,
            mentions=mention_ids,
            mention_roles=mention_roles,
            extra=fields,
        )
        files = [
            SentFile(
                "files", name, mimetypes.guess_type(name)[0] or "application/octet-stream", data
            )
            for name, data in attachments
        ]
        message["attachments"] = self._attach(channel_id, files)
        payload = self._gateway_message(message)
        if self._wants(channel_id):
            await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def message_update(self, message_id: int, content: str) -> dict[str, Any]:
        """A user edits a stored message; returns the MESSAGE_UPDATE payload."""
        message = self.messages[message_id]
        message.update(content=content, edited_timestamp=_now_iso())
        payload = self._gateway_message(message)
        if self._wants(int(message["channel_id"])):
            await self.dispatch("MESSAGE_UPDATE", payload)
        return payload

    async def message_delete(
        self, message_id: int, channel_id: int | None = None
    ) -> dict[str, Any]:
        """A message is deleted; returns the MESSAGE_DELETE payload."""
        stored = self.messages.pop(message_id, None)
        if channel_id is None:
            if stored is None:
                raise KeyError(f"unknown message {message_id}; pass channel_id")
            channel_id = int(stored["channel_id"])
        payload: dict[str, Any] = {"id": str(message_id), "channel_id": str(channel_id)}
        guild_id = self._guild_of(channel_id)
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
        if self._wants(channel_id):
            await self.dispatch("MESSAGE_DELETE", payload)
        return payload

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any]:
        """The synced chat-input command a user can see here (guild ones first)."""
        scopes = ([str(guild_id)] if guild_id is not None else []) + [None]
        for scope in scopes:
            for command in self.commands.values():
                if (
                    command["name"] == name
                    and command.get("type", 1) == 1
                    and command.get("guild_id") == scope
                ):
                    return command
        synced = [(c["name"], c.get("guild_id")) for c in self.commands.values()]
        raise LookupError(f"/{name} is not synced for guild {guild_id}; synced: {synced}")

    async def interaction_create(
        self,
        command_name: str,
        *,
        user_id: int = USER_ID,
        channel_id: int | None = None,
        guild: bool = True,
        roles: Sequence[int] | None = None,
        options: dict[str, Any] | list[dict[str, Any]] | None = None,
        locale: str = "en-US",
    ) -> dict[str, Any]:
        """A user runs a synced slash command; returns the INTERACTION_CREATE payload.

        `roles` overrides the member's roles for this interaction; `options` is name -> value
        (option types inferred) or a raw option list.
        """
        if channel_id is None:
            channel_id = CHANNEL_ID if guild else int(self.open_dm(user_id)["id"])
        guild_id = self._guild_of(channel_id)
        command = self._find_command(command_name, guild_id)
        if isinstance(options, dict):
            option_list = [
                {"name": k, "type": _option_type(v), "value": v} for k, v in options.items()
            ]
        else:
            option_list = list(options or [])
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command_name,
            "type": 1,
            "options": option_list,
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        interaction_id, token, user, payload = self._new_interaction(
            2, data, channel_id, user_id, locale
        )
        channel = dict(self.channels[channel_id])
        if guild_id is not None:
            member = self._member(user_id, roles=roles)
            permissions = str(self._permissions(member["roles"]))
            member["permissions"] = permissions
            channel["permissions"] = permissions
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                app_permissions=str(self._permissions(self.members[BOT_ID]["roles"])),
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,
            )
        else:
            payload.update(
                user=user,
                app_permissions=str(EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        payload["channel"] = channel
        self.interactions[token] = _Interaction(interaction_id, token, channel_id, guild_id, user)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def press(
        self, message_id: int, custom_id: str, *, user_id: int = USER_ID, locale: str = "en-US"
    ) -> dict[str, Any]:
        """A user presses a button (by its custom_id) under a stored message; returns the
        component INTERACTION_CREATE payload (answered through interaction_responses)."""
        message = self.messages[message_id]
        channel_id = int(message["channel_id"])
        guild_id = self._guild_of(channel_id)
        data = {"custom_id": custom_id, "component_type": 2}
        interaction_id, token, user, payload = self._new_interaction(
            3, data, channel_id, user_id, locale
        )
        payload.update(
            channel=dict(self.channels[channel_id]),
            message=self._gateway_message(message),
            app_permissions=str(EVERYONE_PERMISSIONS),
            authorizing_integration_owners={"0": str(guild_id or 0)},
            context=0 if guild_id is not None else 1,
        )
        if guild_id is not None:
            payload.update(guild_id=str(guild_id), guild_locale=self.preferred_locale,
                           member=self._member(user_id))  # fmt: skip
        else:
            payload["user"] = user
        self.interactions[token] = _Interaction(interaction_id, token, channel_id, guild_id, user)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def _new_interaction(
        self, kind: int, data: dict[str, Any], channel_id: int, user_id: int, locale: str
    ) -> tuple[int, str, dict[str, Any], dict[str, Any]]:
        """A new interaction's id, token, user and the payload fields every kind carries."""
        interaction_id = self.snowflake()
        token = f"itoken-{interaction_id}-{secrets.token_hex(8)}"
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APPLICATION_ID),
            "type": kind,
            "data": data,
            "channel_id": str(channel_id),
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        return interaction_id, token, self._user(user_id), payload

    def interaction_responses(self, interaction: dict[str, Any]) -> list[Call]:
        """The callback calls made for an interaction payload from interaction_create."""
        return self.sent("POST", rf"/interactions/{interaction['id']}/[^/]+/callback")

    # ------------------------------------------------------------------ gateway controls

    async def drop_connection(self, code: int | None = 4000) -> None:
        """Close the socket abnormally (close code, or None to cut TCP) so the client RESUMEs."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("no gateway connection to drop")
        conn.dropped = True
        conn.live = False
        self._conn = None
        if code is None:
            if isinstance(conn.transport, asyncio.Transport):
                conn.transport.abort()
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await asyncio.wait_for(conn.ws.close(code=code, message=b"dropped by the fake"), 5)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs."""
        if self._conn is not None:
            await self._send(self._conn, {"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (discord.py waits 5 s before a fresh IDENTIFY)."""
        if self._session is not None and not resumable:
            self._session.resumable = False
        if self._conn is not None:
            await self._send(self._conn, {"op": 9, "d": resumable, "s": None, "t": None})

    # ------------------------------------------------------------------ the gateway

    async def _send(self, conn: _Connection, frame: dict[str, Any]) -> None:
        """Send one frame, zlib-stream compressed when the client asked for it."""
        text = json.dumps(frame)
        async with conn.lock:
            if conn.ws.closed:
                return
            with contextlib.suppress(ConnectionError, RuntimeError):
                if conn.compressor is not None:
                    data = conn.compressor.compress(text.encode()) + conn.compressor.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(text)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        """One client connection: HELLO, then ops until it closes."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(ws=ws, path=request.path, transport=request.transport)
        if self.compress_frames and request.query.get("compress") == "zlib-stream":
            conn.compressor = zlib.compressobj()
        self.connection_count += 1
        self.connection_paths.append(request.path)
        self._open.add(conn)
        self._conn = conn
        try:
            hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gateway"]}
            await self._send(conn, {"op": 10, "d": hello, "s": None, "t": None})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_op(conn, json.loads(msg.data))
        finally:
            self._open.discard(conn)
            conn.live = False
            if self._conn is conn:
                self._conn = None
            if conn.session is not None and not conn.dropped and ws.close_code in (1000, 1001):
                conn.session.resumable = False  # a clean close ends the session on Discord
        return ws

    async def _on_op(self, conn: _Connection, payload: dict[str, Any]) -> None:
        """Handle one op from the client."""
        self.gateway_received.append(payload)
        op, raw = payload.get("op"), payload.get("d")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}  # op 1 carries a number
        if op == 1:
            self.heartbeat_count += 1
            if self.ack_heartbeats:
                await self._send(conn, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            await self._resume(conn, data)
        elif op == 8:
            await self._members_chunk(data)

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        """IDENTIFY: a new session, READY with the guild unavailable, then GUILD_CREATE."""
        self.identify_count += 1
        self.last_identify = data
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & self.disallowed_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self._session = conn.session = _Session(secrets.token_hex(16), intents)
        conn.live = True
        ready = {
            "v": 10,
            "user": {**self.users[BOT_ID], "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": self._session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(APPLICATION_ID), "flags": (1 << 19) | (1 << 15)},
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["fake-gateway"],
        }
        if "shard" in data:  # a sharded client: READY says which shard this session is
            ready["shard"] = data["shard"]
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self.guild_create_payload())

    async def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        """RESUME: replay what the client missed, then RESUMED; or INVALID_SESSION."""
        self.resume_count += 1
        session = self._session
        if (
            session is None
            or not session.resumable
            or data.get("session_id") != session.session_id
            or data.get("token") != self.token
        ):
            await self._send(conn, {"op": 9, "d": False, "s": None, "t": None})
            return
        conn.session = session
        last = int(data.get("seq") or 0)
        index = 0
        while index < len(session.history):  # dispatch() may append while we send
            frame = session.history[index]
            index += 1
            if frame["s"] > last:
                await self._send(conn, frame)
        conn.live = True
        await self.dispatch("RESUMED", {"_trace": ["fake-gateway"]})

    async def _members_chunk(self, data: dict[str, Any]) -> None:
        """REQUEST_GUILD_MEMBERS: one GUILD_MEMBERS_CHUNK."""
        user_ids = [int(u) for u in data.get("user_ids") or []]
        query = data.get("query") or ""
        limit = int(data.get("limit") or 0)
        chosen = [
            uid
            for uid in self.members
            if (not user_ids or uid in user_ids) and self.users[uid]["username"].startswith(query)
        ]
        if limit:
            chosen = chosen[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(data.get("guild_id")),
            "members": [self._member(uid) for uid in chosen],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(u) for u in user_ids if u not in self.members],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ REST plumbing

    def _route_table(
        self,
    ) -> list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]]]]:
        """(method, path regex, handler) for every route the fake serves."""
        cid = r"(?P<channel_id>\d+)"
        mid = r"(?P<message_id>\d+)"
        hook = r"/webhooks/(?P<application_id>\d+)/(?P<token>[^/]+)"
        table: list[tuple[str, str, Callable[..., Awaitable[Any]]]] = [
            ("GET", r"/users/@me", self._get_me),
            ("GET", r"/users/(?P<user_id>\d+)", self._get_user),
            ("POST", r"/users/@me/channels", self._open_dm),
            ("GET", r"/gateway", self._get_gateway),
            ("GET", r"/gateway/bot", self._get_gateway_bot),
            ("GET", r"/oauth2/applications/@me", self._get_application),
            ("GET", r"/applications/@me", self._get_application),
            ("GET", rf"/channels/{cid}", self._get_channel),
            ("GET", rf"/channels/{cid}/messages", self._history),
            ("POST", rf"/channels/{cid}/messages", self._create_message),
            ("GET", rf"/channels/{cid}/messages/{mid}", self._get_message),
            ("PATCH", rf"/channels/{cid}/messages/{mid}", self._edit_message),
            ("DELETE", rf"/channels/{cid}/messages/{mid}", self._delete_message),
            ("POST", rf"/channels/{cid}/typing", self._typing),
            ("PUT", rf"/channels/{cid}/messages/{mid}/reactions/[^/]+/@me", self._react),
            ("DELETE", rf"/channels/{cid}/messages/{mid}/reactions/[^/]+/@me", self._react),
            ("GET", r"/guilds/(?P<guild_id>\d+)", self._get_guild),
            ("GET", r"/guilds/(?P<guild_id>\d+)/channels", self._get_guild_channels),
            ("GET", r"/guilds/(?P<guild_id>\d+)/members/(?P<user_id>\d+)", self._get_member),
            ("GET", r"/applications/(?P<application_id>\d+)/commands", self._get_commands),
            ("PUT", r"/applications/(?P<application_id>\d+)/commands", self._put_commands),
            (
                "GET",
                r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands",
                self._get_commands,
            ),
            (
                "PUT",
                r"/applications/(?P<application_id>\d+)/guilds/(?P<guild_id>\d+)/commands",
                self._put_commands,
            ),
            (
                "POST",
                r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback",
                self._callback,
            ),
            ("POST", hook, self._followup),
            ("GET", hook + r"/messages/(?P<message_id>@original|\d+)", self._get_hook_message),
            ("PATCH", hook + r"/messages/(?P<message_id>@original|\d+)", self._edit_hook_message),
            (
                "DELETE",
                hook + r"/messages/(?P<message_id>@original|\d+)",
                self._delete_hook_message,
            ),
        ]
        return [(method, re.compile(pattern), handler) for method, pattern, handler in table]

    async def _read_body(self, request: web.Request) -> tuple[Any, list[SentFile]]:
        """The JSON body, from plain JSON or multipart's payload_json, plus uploaded files."""
        if request.content_type == "application/json":
            return await request.json(), []
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files: list[SentFile] = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                raw = await part.read()
                if part.name == "payload_json":
                    body = json.loads(raw)
                else:
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    files.append(
                        SentFile(part.name or "", part.filename or "", content_type, bytes(raw))
                    )
            return body, files
        raw_text = await request.text()
        return (json.loads(raw_text) if raw_text else None), []

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        """Record the call, route it (or fail it as told), and answer it, late if told."""
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        call = Call(request.method, path, body, dict(request.query), files)
        self.calls.append(call)
        delay = next((d for d in self._delays if d.when(call)), None)
        if delay is not None:
            self._delays.remove(delay)
        response = await self._answer(request, call, path)
        if delay is not None:  # the call took effect; only its answer is late
            await asyncio.sleep(delay.seconds)
        return response

    async def _answer(self, request: web.Request, call: Call, path: str) -> web.StreamResponse:
        """Apply injected failures, then route the call."""
        for index, failure in enumerate(self._failures):
            if failure.when(call):
                del self._failures[index]
                return self._failure_response(call, failure)
        public = path.startswith("/interactions/") or re.match(r"/webhooks/\d+/[^/]+", path)
        if not public and request.headers.get("Authorization") != f"Bot {self.token}":
            return self._error_response(call, ApiError(401, "401: Unauthorized"))
        for method, regex, handler in self._routes:
            match = regex.fullmatch(path)
            if match and method == request.method:
                try:
                    result = await handler(call, **match.groupdict())
                except ApiError as error:
                    return self._error_response(call, error)
                except Exception as error:  # noqa: BLE001 - a 500 would make discord.py retry for 25 s
                    self.errors.append(error)
                    return self._error_response(call, ApiError(400, f"fake crashed: {error!r}"))
                if result is None:
                    call.status = 204
                    return web.Response(status=204)
                return _json_response(result)
        self.unhandled.append(call)
        return self._error_response(call, ApiError(404, "404: Not Found"))

    @staticmethod
    def _error_response(call: Call, error: ApiError) -> web.Response:
        """Mark the call failed and answer with Discord's error JSON."""
        call.ok = False
        call.status = error.status
        return _json_response(error.body, error.status)

    @staticmethod
    def _failure_response(call: Call, failure: Failure) -> web.Response:
        """An injected error; a 429 carries what discord.py needs to wait and retry."""
        call.ok = False
        call.status = failure.status
        body = failure.body if failure.body is not None else _default_error_body(failure)
        headers: dict[str, str] = {}
        if failure.status == 429:
            retry = float(body.get("retry_after", failure.retry_after))
            headers = {
                "Via": "1.1 google",  # without it discord.py assumes a Cloudflare ban
                "Retry-After": str(max(1, int(retry + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": f"fake-{call.method}-{call.path.split('/')[1]}",
                "X-RateLimit-Scope": "global" if failure.is_global else "user",
            }
            if failure.is_global:
                headers["X-RateLimit-Global"] = "true"
        return _json_response(body, failure.status, headers)

    async def _attachment(self, request: web.Request) -> web.Response:
        """Serve an uploaded file, like the CDN."""
        file = self.attachments.get(int(request.match_info["attachment"]))
        if file is None:
            raise web.HTTPNotFound()
        return web.Response(body=file.data, content_type=file.content_type)

    # ------------------------------------------------------------------ REST: users, gateway

    async def _get_me(self, call: Call) -> dict[str, Any]:
        return {**self.users[BOT_ID], "verified": True, "mfa_enabled": False, "flags": 0}

    async def _get_user(self, call: Call, user_id: str) -> dict[str, Any]:
        user = self.users.get(int(user_id))
        if user is None:
            raise ApiError(404, "Unknown User", 10013)
        return user

    async def _open_dm(self, call: Call) -> dict[str, Any]:
        return self.open_dm(int(call["recipient_id"]))

    async def _get_gateway(self, call: Call) -> dict[str, Any]:
        return {"url": self.gateway_url}

    async def _get_gateway_bot(self, call: Call) -> dict[str, Any]:
        return {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14400000,
                "max_concurrency": 1,
            },
        }

    async def _get_application(self, call: Call) -> dict[str, Any]:
        return {
            "id": str(APPLICATION_ID),
            "name": "qwen",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.users[ADMIN_USER_ID],
            "team": None,
            "verify_key": "0" * 64,
            "flags": (1 << 19) | (1 << 15),
            "hook": True,
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "bot": self.users[BOT_ID],
        }

    # ------------------------------------------------------------------ REST: channels, messages

    def _channel(self, channel_id: str | int) -> dict[str, Any]:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            raise ApiError(404, "Unknown Channel", 10003)
        return channel

    def _message(self, channel_id: str | int, message_id: str | int) -> dict[str, Any]:
        message = self.messages.get(int(message_id))
        if (
            message is None
            or int(message["channel_id"]) != int(channel_id)
            or message["flags"] & EPHEMERAL
        ):
            raise ApiError(404, "Unknown Message", 10008)
        return message

    @staticmethod
    def _check_content(body: dict[str, Any], files: Sequence[SentFile], *, edit: bool) -> None:
        """Discord's limits: 2000 characters, no empty message, embed sizes."""
        content = body.get("content")
        if content is not None and len(content) > MAX_CONTENT:
            raise ApiError(
                400,
                "Invalid Form Body",
                50035,
                {
                    "content": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_MAX_LENGTH",
                                "message": f"Must be {MAX_CONTENT} or fewer in length.",
                            }
                        ]
                    }
                },
            )
        for index, embed in enumerate(body.get("embeds") or []):
            if len(embed.get("description") or "") > 4096:
                raise ApiError(
                    400,
                    "Invalid Form Body",
                    50035,
                    {
                        "embeds": {
                            str(index): {
                                "description": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH"}]}
                            }
                        }
                    },
                )
        if not edit and not (
            content or body.get("embeds") or files or body.get("sticker_ids") or body.get("poll")
        ):
            raise ApiError(400, "Cannot send an empty message", 50006)

    async def _get_channel(self, call: Call, channel_id: str) -> dict[str, Any]:
        return self._channel(channel_id)

    async def _history(self, call: Call, channel_id: str) -> list[dict[str, Any]]:
        self._channel(channel_id)
        limit = int(call.query.get("limit", 50))
        before = int(call.query.get("before", 0)) or None
        after = int(call.query.get("after", 0)) or None
        found = [
            m
            for m in self.channel_messages(int(channel_id))
            if not m["flags"] & EPHEMERAL
            and (before is None or int(m["id"]) < before)
            and (after is None or int(m["id"]) > after)
        ]
        found.sort(key=lambda m: int(m["id"]), reverse=True)
        return found[:limit]

    async def _create_message(self, call: Call, channel_id: str) -> dict[str, Any]:
        channel = self._channel(channel_id)
        body = call.json or {}
        self._check_content(body, call.files, edit=False)
        fields: dict[str, Any] = {}
        mentions = [int(m) for m in re.findall(r"<@!?(\d+)>", body.get("content") or "")]
        mentions = [m for m in mentions if m in self.users]
        message_type = MESSAGE_DEFAULT
        reference = body.get("message_reference")
        if reference and reference.get("message_id") is not None:
            target = self.messages.get(int(reference["message_id"]))
            if target is None:
                if reference.get("fail_if_not_exists", True):
                    raise ApiError(
                        400,
                        "Invalid Form Body",
                        50035,
                        {
                            "message_reference": {
                                "_errors": [
                                    {
                                        "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                        "message": "Unknown message",
                                    }
                                ]
                            }
                        },
                    )
            else:
                fields["message_reference"], fields["referenced_message"] = self._reference(
                    int(target["id"])
                )
                message_type = MESSAGE_REPLY
                allowed = body.get("allowed_mentions")
                if allowed is None or allowed.get("replied_user", False):
                    mentions.append(int(target["author"]["id"]))
        if body.get("nonce") is not None:
            fields["nonce"] = body["nonce"]
        if body.get("embeds"):
            fields["embeds"] = body["embeds"]
        if body.get("components"):
            fields["components"] = body["components"]
        message = self._new_message(
            int(channel["id"]),
            BOT_ID,
            body.get("content") or "",
            message_type=message_type,
            mentions=mentions,
            flags=int(body.get("flags") or 0),
            extra=fields,
        )
        message["attachments"] = self._attach(int(channel["id"]), call.files)
        await self._echo("MESSAGE_CREATE", message)
        return message

    async def _get_message(self, call: Call, channel_id: str, message_id: str) -> dict[str, Any]:
        return self._message(channel_id, message_id)

    async def _apply_edit(self, message: dict[str, Any], call: Call) -> dict[str, Any]:
        """Apply a PATCH body to a stored message and echo MESSAGE_UPDATE."""
        body = call.json or {}
        self._check_content(body, call.files, edit=True)
        updated = dict(message)
        for key in ("content", "embeds", "components"):
            if key in body and body[key] is not None:
                updated[key] = body[key]
        if "flags" in body and body["flags"] is not None:
            updated["flags"] = (message["flags"] & EPHEMERAL) | int(body["flags"])
        updated["flags"] &= ~LOADING
        if not (updated["content"] or updated["embeds"] or updated["attachments"] or call.files):
            raise ApiError(400, "Cannot send an empty message", 50006)
        if call.files:
            channel_id = int(message["channel_id"])
            updated["attachments"] = message["attachments"] + self._attach(channel_id, call.files)
        updated["edited_timestamp"] = _now_iso()
        message.update(updated)
        await self._echo("MESSAGE_UPDATE", message)
        return message

    async def _edit_message(self, call: Call, channel_id: str, message_id: str) -> dict[str, Any]:
        message = self._message(channel_id, message_id)
        if int(message["author"]["id"]) != BOT_ID:
            raise ApiError(403, "Cannot edit a message authored by another user", 50005)
        return await self._apply_edit(message, call)

    async def _delete_message(self, call: Call, channel_id: str, message_id: str) -> None:
        message = self._message(channel_id, message_id)
        del self.messages[int(message["id"])]
        if self.echo_own_messages and self._session is not None and self._wants(int(channel_id)):
            payload: dict[str, Any] = {"id": message["id"], "channel_id": message["channel_id"]}
            guild_id = self._guild_of(int(channel_id))
            if guild_id is not None:
                payload["guild_id"] = str(guild_id)
            await self.dispatch("MESSAGE_DELETE", payload)

    async def _typing(self, call: Call, channel_id: str) -> None:
        self._channel(channel_id)

    async def _react(self, call: Call, channel_id: str, message_id: str) -> None:
        self._message(channel_id, message_id)

    # ------------------------------------------------------------------ REST: guild

    def _check_guild(self, guild_id: str) -> None:
        if int(guild_id) != GUILD_ID:
            raise ApiError(404, "Unknown Guild", 10004)

    async def _get_guild(self, call: Call, guild_id: str) -> dict[str, Any]:
        self._check_guild(guild_id)
        return self.guild_payload()

    async def _get_guild_channels(self, call: Call, guild_id: str) -> list[dict[str, Any]]:
        self._check_guild(guild_id)
        return [c for c in self.channels.values() if c.get("guild_id") and c["type"] != 11]

    async def _get_member(self, call: Call, guild_id: str, user_id: str) -> dict[str, Any]:
        self._check_guild(guild_id)
        if int(user_id) not in self.members:
            raise ApiError(404, "Unknown Member", 10007)
        return self._member(int(user_id))

    # ------------------------------------------------------------------ REST: commands

    def _check_application(self, application_id: str) -> None:
        if int(application_id) != APPLICATION_ID:
            raise ApiError(404, "Unknown Application", 10002)

    async def _get_commands(
        self, call: Call, application_id: str, guild_id: str | None = None
    ) -> list[dict[str, Any]]:
        self._check_application(application_id)
        return [c for c in self.commands.values() if c.get("guild_id") == guild_id]

    async def _put_commands(
        self, call: Call, application_id: str, guild_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Bulk overwrite: the scope's commands become exactly these (ids kept by name)."""
        self._check_application(application_id)
        if guild_id is not None:
            self._check_guild(guild_id)
        old = {
            (c["name"], c.get("type", 1)): cid
            for cid, c in self.commands.items()
            if c.get("guild_id") == guild_id
        }
        for cid in old.values():
            del self.commands[cid]
        result = []
        for spec in call.json or []:
            command_type = int(spec.get("type", 1))
            command_id = old.get((spec["name"], command_type)) or self.snowflake()
            command = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                **spec,
                "id": str(command_id),
                "application_id": str(APPLICATION_ID),
                "type": command_type,
                "version": str(self.snowflake()),
            }
            if guild_id is not None:
                command["guild_id"] = guild_id
            self.commands[command_id] = command
            result.append(command)
        return result

    # ------------------------------------------------------------------ REST: interactions

    def _interaction(self, token: str, interaction_id: str | None = None) -> _Interaction:
        interaction = self.interactions.get(token)
        if interaction is None or (interaction_id and interaction.id != int(interaction_id)):
            raise ApiError(404, "Unknown interaction", 10062)
        return interaction

    def _hook(self, application_id: str, token: str) -> _Interaction:
        if int(application_id) != APPLICATION_ID or token not in self.interactions:
            raise ApiError(404, "Unknown Webhook", 10015)
        return self.interactions[token]

    def _interaction_message(
        self, interaction: _Interaction, body: dict[str, Any], flags: int
    ) -> dict[str, Any]:
        """A message sent through an interaction (response or followup)."""
        metadata = {
            "id": str(interaction.id),
            "type": 2,
            "user": interaction.user,
            "authorizing_integration_owners": {"0": str(interaction.guild_id or 0)},
        }
        fields: dict[str, Any] = {"application_id": str(APPLICATION_ID)}
        fields["webhook_id"] = str(APPLICATION_ID)
        fields["interaction_metadata"] = metadata
        for key in ("embeds", "components"):
            if body.get(key):
                fields[key] = body[key]
        return self._new_message(
            interaction.channel_id,
            BOT_ID,
            body.get("content") or "",
            message_type=MESSAGE_CHAT_INPUT_COMMAND,
            flags=flags,
            extra=fields,
        )

    async def _callback(self, call: Call, interaction_id: str, token: str) -> dict[str, Any] | None:
        """The initial response: once, within the deadline."""
        interaction = self._interaction(token, interaction_id)
        if interaction.response_type is not None:
            raise ApiError(400, "Interaction has already been acknowledged.", 40060)
        deadline = self.interaction_deadline
        if deadline is not None and time.monotonic() - interaction.created > deadline:
            raise ApiError(404, "Unknown interaction", 10062)
        body = call.json or {}
        response_type = int(body["type"])
        data = body.get("data") or {}
        flags = int(data.get("flags") or 0)
        interaction.response_type = response_type
        message = None
        if response_type in (4, 5):
            if response_type == 4:
                self._check_content(data, call.files, edit=False)
            message = self._interaction_message(
                interaction, data, flags | (LOADING if response_type == 5 else 0)
            )
            message["attachments"] = self._attach(interaction.channel_id, call.files)
            interaction.original_id = int(message["id"])
            await self._echo("MESSAGE_CREATE", message)
        if call.query.get("with_response") not in ("1", "true", "True"):
            return None
        answer: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_loading": response_type == 5,
                "response_message_ephemeral": bool(flags & EPHEMERAL),
            },
            "resource": {"type": response_type},
        }
        if message is not None:
            answer["interaction"]["response_message_id"] = message["id"]
            answer["resource"]["message"] = message
        return answer

    def _hook_message(self, interaction: _Interaction, message_id: str) -> dict[str, Any]:
        if message_id == "@original":
            if interaction.response_type is None:
                raise ApiError(404, "Unknown Webhook", 10015)
            if interaction.original_id is None or interaction.original_id not in self.messages:
                raise ApiError(404, "Unknown Message", 10008)
            return self.messages[interaction.original_id]
        message = self.messages.get(int(message_id))
        if message is None or message.get("interaction_metadata", {}).get("id") != str(
            interaction.id
        ):
            raise ApiError(404, "Unknown Message", 10008)
        return message

    async def _followup(self, call: Call, application_id: str, token: str) -> dict[str, Any] | None:
        interaction = self._hook(application_id, token)
        if interaction.response_type is None:
            raise ApiError(404, "Unknown Webhook", 10015)
        body = call.json or {}
        self._check_content(body, call.files, edit=False)
        message = self._interaction_message(interaction, body, int(body.get("flags") or 0))
        message["attachments"] = self._attach(interaction.channel_id, call.files)
        await self._echo("MESSAGE_CREATE", message)
        return message if call.query.get("wait") in ("1", "true", "True") else None

    async def _get_hook_message(
        self, call: Call, application_id: str, token: str, message_id: str
    ) -> dict[str, Any]:
        return self._hook_message(self._hook(application_id, token), message_id)

    async def _edit_hook_message(
        self, call: Call, application_id: str, token: str, message_id: str
    ) -> dict[str, Any]:
        message = self._hook_message(self._hook(application_id, token), message_id)
        return await self._apply_edit(message, call)

    async def _delete_hook_message(
        self, call: Call, application_id: str, token: str, message_id: str
    ) -> None:
        message = self._hook_message(self._hook(application_id, token), message_id)
        del self.messages[int(message["id"])]
        if not message["flags"] & EPHEMERAL and self._session is not None:
            channel_id = int(message["channel_id"])
            payload: dict[str, Any] = {"id": message["id"], "channel_id": str(channel_id)}
            guild_id = self._guild_of(channel_id)
            if guild_id is not None:
                payload["guild_id"] = str(guild_id)
            if self.echo_own_messages and self._wants(channel_id):
                await self.dispatch("MESSAGE_DELETE", payload)
