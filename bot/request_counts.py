"""Requests by platform and outcome, for /metrics: answered, or why not."""

from __future__ import annotations

from collections import Counter

ANSWERED = "answered"


class RequestCounts:
    """Counted on the event loop only (every adapter's requests pass through it)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, platform: str, outcome: str) -> None:
        """One request of `platform`: ANSWERED, or the label of why it was not."""
        self._counts[(platform, outcome)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """(platform, outcome) -> count, as of now."""
        return dict(self._counts)
