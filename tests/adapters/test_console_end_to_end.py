"""`qwenbot chat` as a user runs it, on the real SmolLM2-135M-Instruct model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.smollm2 import smollm2_gguf

ROOT = Path(__file__).parents[2]


def _ask(
    question: str, tmp_path: Path, *options: str, model: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "ENGINE__MODEL"},
        "ENGINE__CACHE_DIR": str(tmp_path / "responses"),
        "BOT__HISTORY_DIR": str(tmp_path / "history"),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # an empty hub cache: nothing can come from there
    }
    if model is not None:
        env["ENGINE__MODEL"] = model
    return subprocess.run(
        [sys.executable, "-m", "bot", "chat", *options],
        input=question,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # no stray .env
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_paris_then_the_same_answer_from_cache_after_a_restart(tmp_path: Path) -> None:
    # Options after the command, as people type them.
    first = _ask(
        "What is the capital of France?\n", tmp_path, "--log-level", "INFO",
        model=str(smollm2_gguf()),
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "Paris" in first.stdout
    assert "s to first token" in first.stdout and "tok/s" in first.stdout
    status = [line for line in first.stderr.splitlines() if line.startswith("qwenbot ·")]
    assert status and "SmolLM2-135M-Instruct" in status[0] and "threads" in status[0]
    assert "Traceback" not in first.stderr
    # One INFO line per loading stage, with its duration; not one per layer.
    stages = [
        line.split(": ", 1)[1] for line in first.stderr.splitlines() if " INFO engine." in line
    ]
    for stage in (
        "found model",
        "torch threads",
        "loaded the tokenizer",
        "loaded weights (",
        "warmed up",
    ):
        said = [line for line in stages if line.startswith(stage)]
        assert len(said) == 1 and re.search(r" in \d+\.\d s$", said[0]), (stage, stages)

    again = _ask("What is the capital of France?\n", tmp_path, model=str(smollm2_gguf()))
    assert again.returncode == 0, again.stderr
    answer = first.stdout.splitlines()[:-1]
    assert again.stdout.splitlines()[:-1] == answer
    assert again.stdout.splitlines()[-1].startswith("⚡ cached · ")


@pytest.mark.slow
def test_offline_a_new_user_is_pointed_to_the_packaged_model_and_it_answers(
    tmp_path: Path,
) -> None:
    refused = _ask("What is the capital of France?\n", tmp_path)  # the default: Qwen3 on the hub
    assert refused.returncode == 1
    assert "qwenbot chat --model smollm2" in refused.stderr and "Traceback" not in refused.stderr
    answered = _ask("What is the capital of France?\n", tmp_path, "--model", "smollm2")
    assert answered.returncode == 0, answered.stderr
    assert "Paris" in answered.stdout and "SmolLM2-135M-Instruct" in answered.stderr
