"""The composition root: `qwenbot chat` wires settings, engine, service and an adapter.

Heavy imports (torch, transformers) wait until the settings are known to be valid, so a
typo in .env is reported in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bot.logging_setup import configure_logging
from bot.settings import Settings, SettingsInvalid, load_settings

if TYPE_CHECKING:
    from engine.bootstrap import ProgressCallback

log = logging.getLogger("qwenbot")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `qwenbot chat` (Telegram and Discord come as their own commands)."""
    parser = argparse.ArgumentParser(
        prog="qwenbot", description="A chatbot that carries its own language model."
    )
    parser.add_argument("--env-file", type=Path, help="read settings from this file, not .env")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("QWENBOT_LOG_LEVEL", "WARNING"),
        help="DEBUG, INFO, WARNING (default) or ERROR; also QWENBOT_LOG_LEVEL",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("chat", help="chat in this terminal (reads a piped question too)")
    return parser


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
    # Imported here, not at the top: torch and transformers take seconds to import.
    from adapters.console_adapter import ConsoleChat, read_stdin_line  # noqa: PLC0415
    from bot.history import HistoryStore  # noqa: PLC0415
    from bot.service import ChatService  # noqa: PLC0415
    from engine.engine import Engine  # noqa: PLC0415
    from engine.errors import EngineError  # noqa: PLC0415

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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `qwenbot` command."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings(args.env_file)
    except SettingsInvalid as error:
        for line in error.lines:
            print(f"qwenbot: {line}", file=sys.stderr)
        return 2
    # Library progress bars would garble ours; tqdm reads this once, when it is imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from engine.loader import quiet_libraries  # noqa: PLC0415  (transformers loads here)

    quiet_libraries()
    if args.command == "chat":
        try:
            return asyncio.run(run_chat(settings, interactive=sys.stdin.isatty()))
        except KeyboardInterrupt:
            return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
