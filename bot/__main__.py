"""The composition root: `qwenbot chat` wires settings, engine, service and an adapter.

Heavy imports (torch, transformers) wait until the settings are known to be valid, so a
typo in .env is reported in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from bot.logging_setup import configure_logging
from bot.settings import SettingsInvalid, load_settings


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
    from bot.app import run_chat  # noqa: PLC0415  (torch and transformers load here)
    from engine.loader import quiet_libraries  # noqa: PLC0415

    quiet_libraries()
    if args.command == "chat":
        try:
            return asyncio.run(run_chat(settings, interactive=sys.stdin.isatty()))
        except KeyboardInterrupt:
            return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
