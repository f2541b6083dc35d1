"""Capture everything the process logs, through the same redacting filter as production."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from bot.logging_setup import RedactSecrets


@contextmanager
def all_logs_redacting(*secrets: str) -> Iterator[io.StringIO]:
    """Root logger at DEBUG into a buffer that has the production redaction filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
