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


def test_models_lists_the_packaged_model_and_the_configured_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no stray .env
    assert main(["models", "--model", "smollm2"]) == 0
    out = capsys.readouterr().out
    listed = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert ["smollm2", "packaged"] in [line[:2] for line in listed]
    assert any(line[-1].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") for line in listed)
    assert "Configured: " in out and "SmolLM2-135M-Instruct.Q4_1.gguf (on disk)" in out


def test_short_model_names_stand_for_a_path_or_a_hub_id() -> None:
    from engine.config import EngineSettings
    from engine.loading.model_source import resolve_source

    packaged = resolve_source(EngineSettings(model="SmolLM2"))
    assert packaged.is_local and packaged.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    hub = resolve_source(EngineSettings(model="qwen3-0.6b"))
    assert (hub.location, hub.is_local) == ("Qwen/Qwen3-0.6B", False)
    assert resolve_source(EngineSettings(model="org/some-model")).location == "org/some-model"


def test_a_packaged_name_without_its_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.config import EngineSettings
    from engine.errors import ModelNotFound
    from engine.loading import model_names
    from engine.loading.model_source import resolve_source

    missing = model_names.PackagedModel("smollm2", "no_such_package", "x.gguf", "pip install x")
    monkeypatch.setitem(model_names.PACKAGED, "smollm2", missing)
    with pytest.raises(ModelNotFound, match="the model 'smollm2' is not installed: pip install x"):
        resolve_source(EngineSettings(model="smollm2"))
    assert model_names.offline_hint().startswith("for a model that works offline: pip install")
