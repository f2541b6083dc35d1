"""Settings from the environment and .env files, and the one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import main
from bot.settings import SettingsInvalid, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray settings from the machine, and no .env in the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith(("ENGINE__", "BOT__", "TELEGRAM__", "DISCORD__")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_follow_the_seed_guide_for_cpu() -> None:
    settings = load_settings()
    assert settings.engine.model == "Qwen/Qwen3-0.6B"
    assert settings.engine.temperature == 0.0 and settings.engine.max_new_tokens == 256
    assert settings.engine.enable_thinking is False and settings.bot.speed_footer is True


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE__MODEL", "/models/qwen.gguf")
    monkeypatch.setenv("ENGINE__DTYPE", "bfloat16")
    monkeypatch.setenv("BOT__ADMIN_IDS", "11, 22 33")
    monkeypatch.setenv("BOT__BLOCKED_IDS", "[5,6]")
    settings = load_settings()
    assert settings.engine.model == "/models/qwen.gguf"
    assert settings.engine.dtype == "bfloat16"
    assert settings.bot.admin_ids == {11, 22, 33}
    assert settings.bot.blocked_ids == {5, 6}


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENGINE__MAX_NEW_TOKENS=64\nBOT__SYSTEM_PROMPT=Bạn là trợ lý.\n")
    settings = load_settings()
    assert settings.engine.max_new_tokens == 64
    assert settings.bot.system_prompt == "Bạn là trợ lý."


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ENGINE__DTYPE", "fp17", "Invalid setting ENGINE__DTYPE='fp17'"),
        ("ENGINE__MAX_NEW_TOKENS", "-5", "Invalid setting ENGINE__MAX_NEW_TOKENS='-5'"),
        ("BOT__ADMIN_IDS", "12,abc", "Invalid setting BOT__ADMIN_IDS='abc'"),
        ("ENGINE__QUANTISATION", "int8", "Unknown setting ENGINE__QUANTISATION"),
    ],
)
def test_bad_values_give_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert len(caught.value.lines) == 1
    assert caught.value.lines[0].startswith(expected)


def test_webhook_mode_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM__MODE", "webhook")
    with pytest.raises(SettingsInvalid) as caught:
        load_settings()
    assert caught.value.lines == [
        "Invalid setting TELEGRAM: mode=webhook needs TELEGRAM__WEBHOOK_URL"
    ]


def test_platform_commands_need_their_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telegram"]) == 2
    assert (
        capsys.readouterr().err.strip() == "qwenbot: TELEGRAM__TOKEN is not set (see .env.example)"
    )
    assert main(["all"]) == 2
    assert "no platform is configured" in capsys.readouterr().err


def test_secret_values_are_never_echoed() -> None:
    from bot.settings import _describe

    line = _describe(
        {"loc": ("telegram", "token"), "input": "123:SECRET", "msg": "bad", "type": "x"}
    )
    assert "SECRET" not in line and "TELEGRAM__TOKEN" in line
    line = _describe(
        {"loc": ("state", "redis_url"), "input": "redis://:hunter2@x", "msg": "bad", "type": "x"}
    )
    assert "hunter2" not in line and "STATE__REDIS_URL" in line


def test_the_redis_password_is_redacted_from_logs_and_stats() -> None:
    from bot.settings import Settings, StateSettings
    from bot.state.redis_link import redacted_url

    url = "redis://:s3cret-redis-pass@cache.internal:6380/2"
    settings = Settings(state=StateSettings(redis_url=url))
    assert "s3cret-redis-pass" in settings.secrets()  # the log filter's list
    assert redacted_url(url) == "redis://:***@cache.internal:6380/2"
    assert redacted_url("redis://app:pw123456@h/0") == "redis://app:***@h/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_cli_stops_with_a_clear_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENGINE__DTYPE", "fp17")
    assert main(["chat"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "qwenbot: Invalid setting ENGINE__DTYPE='fp17': "
        "Input should be 'auto', 'float32' or 'bfloat16'"
    ]


def test_env_example_lists_every_setting() -> None:
    from bot.settings import BotSettings, DiscordSettings, TelegramSettings
    from engine.config import EngineSettings

    example = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    sections = (
        ("ENGINE", EngineSettings),
        ("BOT", BotSettings),
        ("TELEGRAM", TelegramSettings),
        ("DISCORD", DiscordSettings),
    )
    for prefix, model in sections:
        for field in model.model_fields:
            assert f"{prefix}__{field.upper()}=" in example, f"{prefix}__{field.upper()}"


def test_env_example_as_dotenv_gives_the_defaults(tmp_path: Path) -> None:
    import shutil

    from bot.settings import Settings

    shutil.copy(Path(__file__).parents[2] / ".env.example", tmp_path / ".env")
    assert load_settings().model_dump() == Settings(_env_file=None).model_dump()


def test_a_remote_backend_needs_its_servers() -> None:
    from engine import EngineSettings

    with pytest.raises(ValueError, match="needs ENGINE__REMOTE_URLS"):
        EngineSettings(backend="remote")
    with pytest.raises(ValueError, match="start with http"):
        EngineSettings(backend="remote", remote_urls="gpu-box:8000/v1")
    settings = EngineSettings(backend="remote", remote_urls="http://a:8000/v1/, https://b/v1")
    assert settings.remote_urls == ("http://a:8000/v1", "https://b/v1")
