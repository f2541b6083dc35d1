"""Running the bot: load the engine with a progress bar, then serve the chosen front end."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from adapters.console_adapter import ConsoleChat, read_stdin_line
from bot.history import HistoryStore
from bot.service import ChatService
from bot.settings import Settings
from engine.bootstrap import ProgressCallback
from engine.engine import Engine
from engine.errors import EngineError

log = logging.getLogger("qwenbot")


@contextmanager
def loading_progress(console: Console) -> Iterator[ProgressCallback]:
    """A progress bar on stderr while the model loads; the callback is thread-safe."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("Starting", total=100)

        def report(stage: str, fraction: float) -> None:
            progress.update(task, description=stage, completed=fraction * 100)
            if not console.is_terminal:
                log.info("%s", stage)

        yield report


async def run_chat(settings: Settings, interactive: bool) -> int:
    """Load the engine, then chat on the terminal until end of input."""
    console = Console(stderr=True)
    engine = Engine(settings.engine)
    history: HistoryStore | None = None
    try:
        with loading_progress(console) as progress:
            config = await engine.start(progress)
        console.print(f"qwenbot · {config.summary()}", highlight=False, soft_wrap=True)
        history = await asyncio.to_thread(
            HistoryStore, settings.bot.history_dir, settings.bot.history_size_mb * 2**20
        )
        chat = ConsoleChat(ChatService(engine, settings.bot, history))
        if interactive:
            return await chat.run_interactive(read_stdin_line)
        return await chat.run_piped(await asyncio.to_thread(sys.stdin.read))
    except EngineError as error:
        console.print(f"qwenbot: {error}", highlight=False, soft_wrap=True, markup=False)
        return 1
    finally:
        await engine.close()
        if history is not None:
            history.close()
