"""Remove <think>...</think> blocks from streamed text without ever showing half a block."""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


class ThinkFilter:
    """Feed text deltas in, get the user-visible part out.

    Text that might be the start of a tag is held back until the next delta decides it;
    everything inside a think block is dropped, as is whitespace before the first visible
    character (models put blank lines after </think>).
    """

    def __init__(self, starts_inside: bool = False) -> None:
        self._inside = starts_inside
        self._pending = ""
        self._seen_visible = False
        self._thought = starts_inside  # a think block was (or is being) written
        # The whitespace dropped before the first visible character of a reply without a
        # think block (after one, the template renders the history its own way).
        self.lead = ""

    def push(self, delta: str) -> str:
        """Add a delta; return the text that is now safe to show."""
        self._pending += delta
        out: list[str] = []
        while True:
            tag = CLOSE_TAG if self._inside else OPEN_TAG
            index = self._pending.find(tag)
            if index >= 0:
                if not self._inside:
                    out.append(self._pending[:index])
                self._pending = self._pending[index + len(tag) :]
                self._inside, self._thought = not self._inside, True
                continue
            keep = _partial_tag_suffix(self._pending, tag)
            ready = self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep :]
            if not self._inside:
                out.append(ready)
            break
        return self._visible("".join(out))

    def flush(self) -> str:
        """End of stream: a held-back partial tag was plain text; an unclosed block is dropped."""
        rest, self._pending = self._pending, ""
        return "" if self._inside else self._visible(rest)

    def _visible(self, text: str) -> str:
        if not self._seen_visible:
            shown = text.lstrip()
            if not self._thought:
                self.lead += text[: len(text) - len(shown)]
            text, self._seen_visible = shown, bool(shown)
        return text


def strip_think(text: str) -> str:
    """Whole-text version of ThinkFilter, for stored history and cached replies."""
    think = ThinkFilter()
    return think.push(text) + think.flush()
