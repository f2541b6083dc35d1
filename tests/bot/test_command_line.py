"""The `qwenbot` command line: options before or after the command name."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "INFO", "--env-file", "a.env", "chat"],
        ["chat", "--log-level", "INFO", "--env-file", "a.env"],
        ["--log-level", "INFO", "chat", "--env-file", "a.env"],
    ],
)
def test_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.log_level, args.env_file) == ("chat", "INFO", Path("a.env"))


def test_after_the_command_an_option_wins_and_one_left_out_undoes_nothing() -> None:
    parse = build_parser().parse_args
    assert parse(["--log-level", "DEBUG", "telegram", "--log-level", "ERROR"]).log_level == "ERROR"
    assert parse(["--log-level", "DEBUG", "telegram"]).log_level == "DEBUG"
    assert parse(["discord"]).log_level is None  # then QWENBOT_LOG_LEVEL, then the default


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_env_file_named_after_the_command_is_the_one_read(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "other.env"
    env_file.write_text("ENGINE__DTYPE=fp17\n", encoding="utf-8")
    option = ["--env-file", str(env_file)]
    assert main([*option, "chat"] if where == "before" else ["chat", *option]) == 2
    assert "Invalid setting ENGINE__DTYPE='fp17'" in capsys.readouterr().err
