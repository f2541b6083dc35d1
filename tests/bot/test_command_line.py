"""The `qwenbot` command line: options before or after the command name."""

from __future__ import annotations

import subprocess
import sys
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


def _exit_now_in_child(body: str) -> subprocess.CompletedProcess[str]:
    script = f"import threading, time\nfrom bot.__main__ import exit_now\n{body}"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_quick_exit_says_everything_written_and_keeps_the_code() -> None:
    done = _exit_now_in_child("print('the last line', end='')\nexit_now(4)")
    assert (done.returncode, done.stdout) == (4, "the last line")


def test_the_quick_exit_waits_for_a_thread_still_working() -> None:
    body = (
        "worker = threading.Thread(target=lambda: (time.sleep(0.3), print('saved')))\n"
        "worker.start()\n"
        "exit_now(3)"
    )
    done = _exit_now_in_child(body)
    assert (done.returncode, done.stdout) == (3, "saved\n")
