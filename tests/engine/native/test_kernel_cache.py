"""The kernel build cache: a damaged library is rebuilt, never loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.native import kernel_builder


def test_a_damaged_cached_library_is_rebuilt_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    portable = ("-DQB_PORTABLE",)  # the quicker build; the cache works the same for all
    built = kernel_builder.build(portable)
    assert built.parent == tmp_path / "qwenbot" / "kernels"
    intact = built.read_bytes()
    assert kernel_builder.build(portable) == built and not caplog.records  # a cache hit

    built.write_bytes(intact[: len(intact) // 2])  # a torn write, a disk fault
    with caplog.at_level(logging.WARNING):
        rebuilt = kernel_builder.build(portable)
    assert rebuilt == built and "damaged" in caplog.text
    assert rebuilt.read_bytes() == intact
    assert kernel_builder.load(rebuilt).qb_vnni() in (0, 1)
