"""All settings, read by pydantic-settings from the environment or a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.i18n import available_languages, language_of
from engine import EngineSettings, default_data_dir

IdSet = Annotated[frozenset[int], NoDecode]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a chat. Answer clearly and concisely, "
    "in the language the user writes in."
)


def _parse_ids(value: Any) -> Any:
    """Accept "1,2 3", a JSON list, or a list; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [part for part in text.replace(",", " ").split() if part]
    if isinstance(value, int):
        return [value]
    return value


class BotSettings(BaseModel):
    """Chat behaviour: who may talk to the bot, how much it remembers, what it shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    admin_ids: IdSet = Field(frozenset(), description="user ids allowed to run /stats")
    allowed_user_ids: IdSet = Field(frozenset(), description="empty = everyone")
    allowed_chat_ids: IdSet = Field(frozenset(), description="empty = every chat")
    blocked_ids: IdSet = Field(frozenset(), description="user or chat ids never answered")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_token_budget: int = Field(
        3072, ge=64, description="prompt tokens a chat's history may take; then halved"
    )
    history_dir: Path = Field(default_factory=lambda: default_data_dir() / "history")
    history_size_mb: int = Field(64, ge=1)
    inbox_dir: Path = Field(
        default_factory=lambda: default_data_dir() / "inbox",
        description="journal of messages taken: answered after a crash or restart",
    )
    replay_within_s: float = Field(
        600.0, ge=0.0, description="after a restart, answer messages this young; older: sorry"
    )
    max_input_tokens: int = Field(
        8000, ge=1, description="longest single message (also capped by the model's context)"
    )
    rate_limit_per_minute: float = Field(6.0, gt=0, description="messages per user per minute")
    rate_limit_burst: int = Field(3, ge=1, description="messages a user may send back to back")
    speed_footer: bool = True
    max_file_bytes: int = Field(
        1 << 20, ge=1024, description="largest text file read as a message (a log, a script)"
    )
    language: str | None = Field(
        None, description="answer everyone in this language (en, vi); unset: each user's own"
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is not None and language_of(value) is None:
            known = ", ".join(available_languages())
            raise ValueError(f"no texts in {value!r}; the bot speaks {known}")
        return value

    @field_validator("history_dir", "inbox_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator(
        "admin_ids", "allowed_user_ids", "allowed_chat_ids", "blocked_ids", mode="before"
    )
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return _parse_ids(value)


class TelegramSettings(BaseModel):
    """The Telegram bot: token, Bot API server, polling or webhook, streaming pace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr | None = Field(None, description="from @BotFather; required for telegram")
    base_url: str = Field(
        "https://api.telegram.org/bot", description="Bot API server (self-hosted: its URL + /bot)"
    )
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = Field(None, description="public HTTPS URL Telegram posts to")
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = Field(8443, ge=1, le=65535)
    webhook_path: str = Field("telegram", description="URL path the webhook server serves")
    webhook_secret: SecretStr | None = Field(None, description="X-Telegram-Bot-Api-Secret-Token")
    use_drafts: bool = Field(True, description="stream private replies with sendMessageDraft")
    edit_interval_s: float = Field(1.0, ge=0.0, description="least time between edits, private")
    group_edit_interval_s: float = Field(3.0, ge=0.0, description="the same, in groups")
    max_concurrent_updates: int = Field(32, ge=1, description="chats served at once")
    paste_join_s: float = Field(
        1.5, ge=0.0, description="a long text's parts sent this close are one message (0: off)"
    )
    shutdown_grace_s: float = Field(10.0, ge=0.0, description="time replies get to finish")

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> TelegramSettings:
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("mode=webhook needs TELEGRAM__WEBHOOK_URL")
        return self


class DiscordSettings(BaseModel):
    """The Discord bot: token, where slash commands are synced, admin roles, streaming pace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr | None = Field(None, description="Developer Portal > Bot > Token")
    guild_id: int | None = Field(None, description="sync slash commands to this server only")
    admin_role_ids: IdSet = Field(frozenset(), description="roles allowed to run /stats")
    edit_interval_s: float = Field(1.0, ge=0.0, description="least time between edits")
    max_reply_chain: int = Field(20, ge=0, description="replied-to messages read as context")
    shutdown_grace_s: float = Field(10.0, ge=0.0, description="time replies get to finish")
    shard_count: int | None = Field(
        None, ge=1, description="shards of the whole bot (discord.py's AutoShardedBot)"
    )
    shard_ids: Annotated[tuple[int, ...], NoDecode] = Field(
        (), description="the shards this process runs; empty = all of them"
    )

    @field_validator("admin_role_ids", "shard_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return _parse_ids(value)

    @model_validator(mode="after")
    def _shards_within_count(self) -> DiscordSettings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("shard_ids needs DISCORD__SHARD_COUNT")
        if any(not 0 <= shard < (self.shard_count or 0) for shard in self.shard_ids):
            raise ValueError(f"shard ids run from 0 to {(self.shard_count or 1) - 1}")
        return self


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ServeSettings(BaseModel):
    """The HTTP API (`qwenbot serve`): where it listens, who may call it, how much."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="listening elsewhere needs SERVE__API_KEYS")
    port: int | None = Field(
        None, ge=1, le=65535, description="8000 when unset; `qwenbot all` serves HTTP if set"
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Bearer keys, comma-separated; empty = no key, loopback only"
    )
    max_body_kb: int = Field(1024, ge=1, description="largest request body")
    rate_limit_per_minute: float = Field(60.0, gt=0, description="requests per key per minute")
    rate_limit_burst: int = Field(10, ge=1, description="requests a key may send back to back")
    open_metrics: bool = Field(True, description="/metrics without a key, like the probes")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @model_validator(mode="after")
    def _keys_beyond_loopback(self) -> ServeSettings:
        if self.host not in LOOPBACK_HOSTS and not self.api_keys:
            raise ValueError(f"listening on {self.host} needs SERVE__API_KEYS")
        return self


class StateSettings(BaseModel):
    """Where the bot's memory lives: embedded stores (one process), or Redis (a fleet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: SecretStr | None = Field(
        None, description="redis://[:password@]host:port/db; unset = embedded stores"
    )
    prefix: str = Field("qwenbot", min_length=1, description="key prefix: bots sharing a Redis")
    timeout_s: float = Field(1.0, gt=0, description="longest wait for one Redis command")
    history_ttl_days: float = Field(30.0, gt=0, description="an idle chat's history is kept")
    cache_ttl_days: float = Field(7.0, gt=0, description="a cached reply is kept")
    lock_lease_s: float = Field(
        15.0, ge=1.0, description="a dead process's chat lock frees itself after this"
    )
    owner_ttl_s: float = Field(
        10.0, ge=1.0, description="a dead process's unanswered messages are taken over after"
    )


class Settings(BaseSettings):
    """Top-level settings; nested with `__`, e.g. ENGINE__MODEL or BOT__ADMIN_IDS."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",  # a shared .env may hold other programs' variables
        env_ignore_empty=True,  # `ENGINE__THREADS=` (as in .env.example) means "the default"
    )

    engine: EngineSettings = EngineSettings()  # frozen, so one shared default is safe
    bot: BotSettings = BotSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    serve: ServeSettings = ServeSettings()
    state: StateSettings = StateSettings()

    def secrets(self) -> list[str]:
        """Every secret value, for the log filter to redact: bot tokens, API keys (ours and
        the inference servers'), and the Redis URL's password (a library may print it)."""
        tokens = (self.telegram.token, self.discord.token, *self.serve.api_keys,
                  self.engine.remote_api_key)  # fmt: skip
        found = [token.get_secret_value() for token in tokens if token is not None]
        if self.state.redis_url is not None:
            password = urlsplit(self.state.redis_url.get_secret_value()).password
            found += [password] if password else []
        return found


class SettingsInvalid(ValueError):
    """One line per bad setting, naming its environment variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _is_secret(name: str) -> bool:
    """TELEGRAM__TOKEN, WEBHOOK_SECRET_TOKEN, ...: values never echoed back."""
    last = name.rsplit("__", 1)[-1]
    return (
        last in {"TOKEN", "REDIS_URL"}  # a Redis URL may carry a password
        or last.endswith("_TOKEN")
        or any(word in last for word in ("SECRET", "PASSWORD", "KEY"))
    )


def _describe(error: dict[str, Any]) -> str:
    name = "__".join(str(part) for part in error["loc"] if not isinstance(part, int)).upper()
    shown = error.get("input")
    if _is_secret(name):
        shown = "***"  # never echo a secret, even a malformed one
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"Unknown setting {name}: check the spelling against .env.example"
    if isinstance(shown, dict | list):
        return f"Invalid setting {name}: {message}"
    return f"Invalid setting {name}={shown!r}: {message}"


def load_settings(env_file: Path | None = None) -> Settings:
    """Read settings; raise SettingsInvalid with one clear line per problem."""
    try:
        if env_file is not None:
            return Settings(_env_file=env_file)
        return Settings()
    except ValidationError as error:
        raise SettingsInvalid([_describe(dict(e)) for e in error.errors()]) from None
