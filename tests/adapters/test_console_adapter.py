"""The console chat on the tiny model: piped and interactive modes, Ctrl-C, Ctrl-D."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from adapters.console_adapter import ConsoleChat
from bot.formatting import history_cleared
from bot.history import HistoryStore
from bot.i18n import translator
from bot.service import ChatService
from bot.settings import BotSettings
from engine.config import EngineSettings
from engine.engine import Engine
from tests.support.chat import wait_until


@pytest.fixture(autouse=True)
def english_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console speaks the terminal's language: these tests read its English."""
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "en_US.UTF-8")


@pytest.fixture
def history(tmp_path: Path) -> Iterator[HistoryStore]:
    store = HistoryStore(tmp_path / "history", 1 << 20)
    yield store
    store.close()


def lines(*items: str) -> Callable[[], Awaitable[str]]:
    """A read_line that types these lines, then Ctrl-D."""
    queue = list(items)

    async def read_line() -> str:
        await asyncio.sleep(0)
        return queue.pop(0) if queue else ""

    return read_line


async def test_piped_question_prints_answer_and_footer(
    engine: Engine, history: HistoryStore
) -> None:
    out, err = io.StringIO(), io.StringIO()
    chat = ConsoleChat(ChatService(engine, BotSettings(), history), out, err)
    assert await chat.run_piped("Hello, who are you?\n") == 0
    printed = out.getvalue().splitlines()
    assert printed[-1].startswith("⚡ ") and "tokens" in printed[-1]
    assert "".join(printed[:-1]).strip()
    assert await chat.run_piped("Hello, who are you?\n") == 0  # stands alone: cached
    assert out.getvalue().splitlines()[-1].startswith("⚡ cached")


async def test_empty_pipe_is_an_error(engine: Engine, history: HistoryStore) -> None:
    chat = ConsoleChat(ChatService(engine, BotSettings(), history), io.StringIO(), io.StringIO())
    assert await chat.run_piped("  \n") == 1


async def test_interactive_session_resets_shows_stats_and_exits_on_ctrl_d(
    engine: Engine, history: HistoryStore
) -> None:
    out, err = io.StringIO(), io.StringIO()
    chat = ConsoleChat(ChatService(engine, BotSettings(), history), out, err)
    code = await chat.run_interactive(lines("Hello\n", "\n", "/reset\n", "/stats\n"))
    assert code == 0
    text = out.getvalue()
    assert "⚡" in text and history_cleared(translator("en")) in text
    assert "Requests 1" in text  # the console user is the operator, so /stats is shown


async def test_exit_word_quits(engine: Engine, history: HistoryStore) -> None:
    chat = ConsoleChat(ChatService(engine, BotSettings(), history), io.StringIO(), io.StringIO())
    assert await chat.run_interactive(lines("/exit\n", "never read\n")) == 0


class _SignalOnFirstText(io.StringIO):
    """Stands in for stdout; presses Ctrl-C (a real SIGINT) once reply text appears."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = False

    def write(self, text: str) -> int:
        if text.strip() and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


async def test_ctrl_c_stops_the_reply_and_keeps_the_chat_open(
    engine_settings: EngineSettings, history: HistoryStore
) -> None:
    engine = Engine(engine_settings.model_copy(update={"max_new_tokens": 3000}))
    await engine.start()
    out, err = _SignalOnFirstText(), io.StringIO()
    chat = ConsoleChat(ChatService(engine, BotSettings(), history), out, err)
    try:
        code = await asyncio.wait_for(
            chat.run_interactive(lines("Tell me everything\n", "/stats\n")), 120
        )
        await wait_until(lambda: not engine.busy)  # the worker stops at its next token
    finally:
        await engine.close()
    assert code == 0 and out.sent
    assert "(stopped)" in err.getvalue()
    assert "Requests" in out.getvalue()  # the loop went on to the next line
