"""Split a long reply into messages under a platform's limit, keeping code blocks whole."""

from __future__ import annotations

from collections.abc import Callable

FENCE = "```"
Measure = Callable[[str], int]


def utf16_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def open_fence(text: str) -> str | None:
    """The opening line of a code block left open at the end of text, or None."""
    opening: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE):
            opening = None if opening is not None else stripped
    return opening


def _longest_prefix(text: str, budget: int, measure: Measure) -> int:
    """The most characters of text whose measure fits the budget (binary search)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _cut_point(text: str, fits: int, floor: int) -> int:
    """Where to cut within text[:fits]: a paragraph, else a line, else a word boundary."""
    window = text[:fits]
    for separator, least in (("\n\n", fits // 2), ("\n", fits // 3), (" ", 1)):
        index = window.rfind(separator)
        if index > max(least, floor):
            return index
    return fits  # one unbroken run of characters: cut it where it stops fitting


def split_message(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Parts of at most `limit` (by measure); a code block cut in two is closed at the end of
    one part and reopened, with its language, at the start of the next."""
    closing = "\n" + FENCE
    parts: list[str] = []
    reopen = ""
    rest = text.strip()
    while rest:
        candidate = reopen + rest
        if measure(candidate) <= limit:
            parts.append(candidate)
            break
        fits = _longest_prefix(candidate, limit - measure(closing), measure)
        cut = _cut_point(candidate, fits, floor=len(reopen))
        head, rest = candidate[:cut].rstrip(), candidate[cut:]
        fence = open_fence(head)
        if fence is not None:
            parts.append(head + closing)
            reopen = fence + "\n"
            rest = rest.lstrip("\n")
        else:
            parts.append(head)
            reopen = ""
            rest = rest.strip()
    return [part for part in parts if part.strip()]
