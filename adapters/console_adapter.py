"""Chat with the bot in a terminal: interactive, or piped (`echo question | qwenbot chat`)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot import formatting
from bot.messages import IncomingMessage, Notice, QueuePosition, Reading, ReplyDone, ReplyText
from bot.service import ChatService

PROMPT = "› "
EXIT_WORDS = {"/exit", "/quit", "/bye"}
ReadLine = Callable[[], Awaitable[str]]


def terminal_language() -> str | None:
    """The terminal's language as POSIX orders the variables (LC_ALL, LC_MESSAGES, LANG)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := os.environ.get(name):
            return value
    return None


class ConsoleChat:
    """Renders reply events as plain text: the reply streams to `out`, notes go to `err`."""

    def __init__(
        self, service: ChatService, out: TextIO = sys.stdout, err: TextIO = sys.stderr
    ) -> None:
        self._service = service
        self._out = out
        self._err = err
        self._user = getpass.getuser()
        self._language = terminal_language()

    async def ask(self, text: str, keep_history: bool = True) -> bool:
        """Send one message and print the reply; False when it was refused or failed."""
        message = IncomingMessage(
            platform="console",
            chat_id=0,
            user_id=0,
            user_name=self._user,
            text=text,
            is_private=True,
            keep_history=keep_history,
            language=self._language,
        )
        t = self._service.translator(message)
        streamed = ""
        ok = True
        async for event in self._service.handle(message):
            if isinstance(event, QueuePosition):
                self._note(f"({formatting.queued(t, event.ahead, event.wait_s)})")
            elif isinstance(event, Reading):
                self._note(f"({formatting.reading(t, event.tokens)})")
            elif isinstance(event, ReplyText):
                streamed += event.text
                self._write(event.text)
            elif isinstance(event, ReplyDone):
                if not streamed.strip():
                    self._write(event.text)
                self._write("\n")
                if event.footer:
                    self._write(event.footer + "\n")
            elif isinstance(event, Notice):
                self._write(event.text + "\n")
                ok = ok and not event.is_error
        return ok

    async def run_piped(self, text: str) -> int:
        """Answer the whole of standard input as one message; exit status 0 on an answer."""
        if not text.strip():
            self._note("nothing to ask: standard input was empty")
            return 1
        # A scripted question stands alone: the same question always gets the same (cached) answer.
        return 0 if await self.ask(text, keep_history=False) else 1

    async def run_interactive(self, read_line: ReadLine) -> int:
        """A read-answer loop: Ctrl-C stops the current reply, Ctrl-D (or /exit) quits."""
        loop = asyncio.get_running_loop()
        current: asyncio.Task[bool] | None = None

        def on_interrupt() -> None:
            if current is not None and not current.done():
                current.cancel()
            else:
                self._note("\n(Ctrl-D or /exit to quit)")
                self._prompt()

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
        try:
            self._note("Type a message and press Enter. /reset forgets, Ctrl-D quits.")
            while True:
                self._prompt()
                line = await read_line()
                if not line:  # end of input: Ctrl-D
                    self._note("")
                    return 0
                text = line.strip()
                if text in EXIT_WORDS:
                    return 0
                if not text:
                    continue
                current = asyncio.create_task(self.ask(text))
                try:
                    await current
                except asyncio.CancelledError:
                    this_task = asyncio.current_task()
                    if this_task is not None and this_task.cancelling():
                        raise  # the console itself is being cancelled, not just the reply
                    self._write("\n")
                    self._note("(stopped)")
                current = None
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)

    def _prompt(self) -> None:
        self._err.write(PROMPT)
        self._err.flush()

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def _note(self, text: str) -> None:
        self._err.write(text + "\n")
        self._err.flush()


async def read_stdin_line() -> str:
    """One line from standard input without blocking the event loop ('' at end of input)."""
    return await asyncio.to_thread(sys.stdin.readline)
