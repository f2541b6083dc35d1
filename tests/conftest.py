"""Shared fixtures: an offline environment and a tiny real Qwen3 model built once per run.

The engine is imported inside fixtures, not at the top: huggingface_hub reads HF_HUB_OFFLINE
once, when it is first imported, and pytest_configure must set it before that happens.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from engine.config import EngineSettings
    from engine.engine import Engine
    from tests.support.redis_server import RedisServer


def pytest_configure(config: pytest.Config) -> None:
    """No hub, no telemetry, no progress bars: the run must work without the internet."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["PTB_TIMEDELTA"] = "1"  # what the entry point sets: durations as timedelta
    _private_cache_folder()


def _private_cache_folder() -> None:
    """The run's own ~/.cache (packed weights, converted GGUF tokenizers), bots started by
    tests included: a test's model must never land in, or be read from, the user's. The
    compiled kernels are shared with the user's folder: they take a minute to build."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    kernels = base / "qwenbot" / "kernels"
    kernels.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="qwenbot-test-cache-"))
    (private / "qwenbot").mkdir()
    (private / "qwenbot" / "kernels").symlink_to(kernels, target_is_directory=True)
    os.environ["XDG_CACHE_HOME"] = str(private)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's private cache folder (the kernels it links to stay)."""
    private = os.environ.get("XDG_CACHE_HOME", "")
    if Path(private).name.startswith("qwenbot-test-cache-"):
        shutil.rmtree(private, ignore_errors=True)  # removes the link, not its target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight Qwen3 with the real Qwen tokenizer and chat template."""
    from tests.support.tiny_qwen import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture
def engine_settings(tiny_model_dir: Path, tmp_path: Path) -> EngineSettings:
    """Settings for the tiny model with a private cache directory."""
    from engine.config import EngineSettings

    return EngineSettings(
        model=str(tiny_model_dir),
        cache_dir=tmp_path / "responses",
        max_new_tokens=12,
        warmup=False,
    )


@pytest.fixture
async def engine(engine_settings: EngineSettings) -> AsyncIterator[Engine]:
    """A started engine on the tiny model, closed after the test."""
    from engine.engine import Engine

    started = Engine(engine_settings)
    await started.start()
    yield started
    await started.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own, on a free port; stopped after it."""
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
