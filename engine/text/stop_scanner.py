"""Stop sequences over streamed text: release what cannot be the start of one, end at one."""

from __future__ import annotations


class StopScanner:
    """Text is held back only while it could still be the beginning of a stop sequence, so
    a stream never shows a stop sequence or a piece of one, and shows everything else as
    soon as it is known (as OpenAI's API and llama.cpp's server do)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add generated text; return what may be shown now (nothing once stopped)."""
        if self.stopped or not self._stops:
            return "" if self.stopped else text
        self._held += text
        found = [self._held.find(stop) for stop in self._stops if stop in self._held]
        if found:
            self.stopped = True
            shown, self._held = self._held[: min(found)], ""
            return shown
        keep = max(_partial_tail(self._held, stop) for stop in self._stops)
        shown = self._held[: len(self._held) - keep]
        self._held = self._held[len(shown) :]
        return shown

    def flush(self) -> str:
        """The reply ended: what was held back was not a stop sequence after all."""
        shown, self._held = ("" if self.stopped else self._held), ""
        return shown


def _partial_tail(text: str, stop: str) -> int:
    """The length of the longest end of text that is a beginning of stop."""
    for length in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-length:]):
            return length
    return 0
