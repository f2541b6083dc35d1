"""What could not run on this machine and what runs instead: said once, kept for /stats."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Fallbacks:
    """The fallbacks taken while loading, in the order they happened."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, what: str, why: object, instead: str) -> None:
        """Record and log (one WARNING line) that `what` cannot run here, and why."""
        line = f"{what} unavailable ({why}); using {instead} instead"
        log.warning(line)
        self.lines.append(line)
