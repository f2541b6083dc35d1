"""Recognising commands (/start, /help, /reset, /stats) in message text."""

from __future__ import annotations

from dataclasses import dataclass

from bot.i18n import Translator

COMMANDS = ("ask", "stop", "reset", "stats", "help", "start")  # the commands this bot answers


def command_descriptions(t: Translator) -> dict[str, str]:
    """name -> the one-line description shown in the platform's command menu."""
    return {
        "ask": t.gettext("ask me something (in groups: /ask@me your question)"),
        "stop": t.gettext("stop the answer I am writing"),
        "reset": t.gettext("forget our conversation in this chat"),
        "stats": t.gettext("speed and load figures (admins only)"),
        "help": t.gettext("what I can do"),
        "start": t.gettext("say hello"),
    }


def help_text(t: Translator) -> str:
    """The answer to /help (and to commands the bot does not know)."""
    return t.gettext(
        "I'm a chatbot running my own language model on this server. "
        "Write to me and I'll answer; in groups, mention me, reply to my message, "
        "or use /ask.\n"
        "/reset — forget our conversation in this chat\n"
        "/stats — speed and load figures (admins only)\n"
        "/help — this text"
    )


def start_text(t: Translator) -> str:
    """The answer to /start: a greeting, then the help."""
    return t.gettext("Hello!") + " " + help_text(t)


@dataclass(frozen=True)
class Command:
    """A parsed command: `/name@target args`."""

    name: str
    args: str
    target: str | None  # the bot a group command is addressed to, if named


def parse_command(text: str) -> Command | None:
    """A command at the start of text, or None for ordinary messages."""
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return None
    head, *rest = text[1:].split(maxsplit=1)
    args = rest[0] if rest else ""
    name, _, target = head.partition("@")
    if not name.replace("_", "").isalnum():
        return None  # "/ path/to/file" or "/?" is text, not a command
    return Command(name.lower(), args.strip(), target or None)
