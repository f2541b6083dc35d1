"""The composition root: `qwenbot chat` wires settings, engine, service and an adapter.

Heavy imports (torch, transformers) wait until the settings are known to be valid, so a
typo in .env is reported in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bot.logging_setup import configure_logging
from bot.model_list import print_models
from bot.platforms import configured_platforms
from bot.settings import Settings, SettingsInvalid, load_settings

if TYPE_CHECKING:
    from adapters.discord_adapter import DiscordAdapter
    from adapters.http_server import HttpAdapter
    from adapters.telegram_adapter import TelegramAdapter
    from bot.service import ChatService
    from bot.state.open_state import BotState
    from engine import ProgressCallback

log = logging.getLogger("qwenbot")


def _common_options(*, after_command: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (`qwenbot --log-level INFO
    chat` and `qwenbot chat --log-level INFO`). After it, an option left out must not undo
    one given before, so there an absent option sets nothing."""
    options = argparse.ArgumentParser(
        add_help=False, argument_default=argparse.SUPPRESS if after_command else None
    )
    options.add_argument("--env-file", type=Path, help="read settings from this file, not .env")
    options.add_argument(
        "--model", help="the model for this run (ENGINE__MODEL): smollm2, qwen3-0.6b, a path"
    )
    options.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING or ERROR (default: WARNING for chat, INFO for bots); "
        "also QWENBOT_LOG_LEVEL",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    """The command line: `qwenbot chat | telegram | discord | all`, options on either side."""
    parser = argparse.ArgumentParser(
        prog="qwenbot",
        description="A chatbot that carries its own language model.",
        parents=[_common_options(after_command=False)],
    )
    after = [_common_options(after_command=True)]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("chat", "chat in this terminal (reads a piped question too)"),
        ("telegram", "run the Telegram bot (needs TELEGRAM__TOKEN)"),
        ("discord", "run the Discord bot (needs DISCORD__TOKEN)"),
        ("serve", "serve the OpenAI-compatible HTTP API (SERVE__HOST, SERVE__PORT)"),
        ("all", "run every platform that has a token (and HTTP when SERVE__PORT is set)"),
        ("models", "list the models on this machine (no download needed) and the configured one"),
    ):
        commands.add_parser(name, help=text, parents=after)
    return parser


@contextmanager
def loading_progress(console: Console) -> Iterator[ProgressCallback]:
    """A progress bar on stderr while the model loads (a terminal only); the callback is
    thread-safe."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("Starting", total=100)

        def report(stage: str, fraction: float) -> None:
            # The engine logs each stage once it ends (with its duration); this is the bar only.
            progress.update(task, description=stage, completed=fraction * 100)

        yield report


@asynccontextmanager
async def running_service(
    settings: Settings, console: Console
) -> AsyncIterator[tuple[ChatService, BotState]]:
    """Open the state (embedded or Redis), load the engine (with a progress bar); close
    both at the end."""
    # Imported here, not at the top: torch and transformers take seconds to import.
    from bot.state.open_state import open_state  # noqa: PLC0415
    from engine import Engine  # noqa: PLC0415

    state = await asyncio.to_thread(open_state, settings)
    engine = Engine(settings.engine, state.reply_cache)
    try:
        with loading_progress(console) as progress:
            config = await engine.start(progress)
        console.print(f"qwenbot · {config.summary()}", highlight=False, soft_wrap=True)
        if state.link is not None:
            log.info("state shared in Redis at %s", state.link.where)
        yield state.chat_service(engine), state
    finally:
        await engine.close()  # cancels replies still running
        state.close()


async def run_chat(settings: Settings, interactive: bool) -> int:
    """Chat on the terminal until end of input."""
    from adapters.console_adapter import ConsoleChat, read_stdin_line  # noqa: PLC0415

    console = Console(stderr=True)
    async with running_service(settings, console) as (service, _):
        chat = ConsoleChat(service)
        if interactive:
            return await chat.run_interactive(read_stdin_line)
        return await chat.run_piped(await asyncio.to_thread(sys.stdin.read))


async def run_platforms(settings: Settings, platforms: list[str]) -> int:
    """Serve the chat platforms until SIGINT or SIGTERM, sharing one engine."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    http = None
    try:
        if "serve" in platforms:
            from adapters.http_server import HttpAdapter  # noqa: PLC0415

            # Listening before the model loads: /readyz says 503 meanwhile, and a port in
            # use is said at once, not after a minute of loading.
            http = HttpAdapter(settings.serve)
            await http.start()
            log.info("HTTP API on http://%s", http.address)
        async with running_service(settings, Console(stderr=True)) as (service, state):
            if http is not None:
                serve = settings.serve
                http.slot.limiter = state.limiter(
                    serve.rate_limit_per_minute, serve.rate_limit_burst, "http"
                )
                http.slot.service = service
            return await _serve(settings, service, state, platforms, stop=stop, http=http)
    except OSError as error:
        print(f"qwenbot: {error}", file=sys.stderr)
        return 1
    finally:
        if http is not None:
            await http.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _serve(
    settings: Settings,
    service: ChatService,
    state: BotState,
    platforms: list[str],
    *,
    stop: asyncio.Event,
    http: HttpAdapter | None,
) -> int:
    from adapters.discord_adapter import DiscordAdapter  # noqa: PLC0415
    from adapters.telegram_adapter import TelegramAdapter  # noqa: PLC0415

    # One journal for every platform: what each took, and what each still owes.
    inbox = state.journal()  # closed with the state
    adapters: list[TelegramAdapter | DiscordAdapter | HttpAdapter] = []
    if "telegram" in platforms:
        adapters.append(TelegramAdapter(service, settings.telegram, inbox))
    if "discord" in platforms:
        adapters.append(DiscordAdapter(service, settings.discord, inbox))
    if http is not None:
        adapters.append(http)
    return await _run_adapters(adapters, stop)


async def _run_adapters(
    adapters: list[TelegramAdapter | DiscordAdapter | HttpAdapter], stop: asyncio.Event
) -> int:
    try:
        async with asyncio.TaskGroup() as group:  # one platform failing stops the others
            for adapter in adapters:
                group.create_task(adapter.run(stop))
    except ExceptionGroup as failures:
        debug = log.isEnabledFor(logging.DEBUG)
        for failure in failures.exceptions:
            # One line for the operator; the traceback only when debugging.
            log.error(
                "a platform stopped: %s: %s",
                type(failure).__name__,
                failure,
                exc_info=failure if debug else None,
            )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `qwenbot` command."""
    args = build_parser().parse_args(argv)
    level = args.log_level or os.environ.get("QWENBOT_LOG_LEVEL")
    level = level or ("WARNING" if args.command == "chat" else "INFO")
    configure_logging(level)
    try:
        settings = load_settings(args.env_file)
    except SettingsInvalid as error:
        for line in error.lines:
            print(f"qwenbot: {line}", file=sys.stderr)
        return 2
    if args.model:  # the command line wins over the environment and .env
        engine = settings.engine.model_copy(update={"model": args.model})
        settings = settings.model_copy(update={"engine": engine})
    if args.command == "models":
        return print_models(settings.engine.model, sys.stdout)
    platforms: list[str] = []
    if args.command != "chat":
        found = configured_platforms(settings, args.command)
        if isinstance(found, str):
            print(f"qwenbot: {found}", file=sys.stderr)
            return 2
        platforms = found
    configure_logging(
        level, settings.secrets()
    )  # now that the tokens are known, they are redacted too
    # Library progress bars would garble ours; tqdm reads this once, when it is imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    # python-telegram-bot's future duration type, opted into now: its RetryAfter otherwise
    # warns on every 429 the rate limiter waits out.
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    from engine import EngineError, quiet_libraries  # noqa: PLC0415  (torch loads here)

    quiet_libraries()
    try:
        if args.command == "chat":
            return asyncio.run(run_chat(settings, interactive=sys.stdin.isatty()))
        return asyncio.run(run_platforms(settings, platforms))
    except EngineError as error:
        print(f"qwenbot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """The `qwenbot` command: main(), then out without the interpreter's teardown."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process once main() has closed everything it opened.

    By then every store is closed and the engine's worker joined; the interpreter's own
    teardown would only free memory one object at a time (0.5 s for a 0.6B model's
    tokenizer, weights and torch), which the OS takes back at once. Any other thread
    still running gets the normal exit, which waits for it.
    """
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):  # fmt: skip
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
