"""Packed weights kept on disk: mapped at the next start, rebuilt when damaged, bounded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import transformers

from engine.loading.model_source import ModelSource
from engine.loading.native_backend import PackedCache, load_native
from engine.loading.packed_cache import cache_folder
from engine.native.linear import Scheme
from engine.native.model import NativeDecoder

IDS = torch.tensor([151644, 872, 198, 9707, 11, 1246, 525, 498, 30, 151645, 198, 151644, 77091])


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _load(
    folder: Path, scheme: Scheme = "int8", limit_mb: int = 1024
) -> tuple[NativeDecoder, bool]:
    config = transformers.AutoConfig.from_pretrained(folder)
    return load_native(
        ModelSource(str(folder), None, True, None), config, scheme=scheme, dtype=torch.bfloat16,
        reduce_range=True, keep_blocks=False, progress=lambda _: None,
        cache=PackedCache(f"local:{folder}", limit_mb),
    )  # fmt: skip


def _logits(decoder: NativeDecoder) -> torch.Tensor:
    cache = decoder.new_cache(64)
    rows = [decoder.forward(IDS[:7], cache)]
    rows += [decoder.forward(IDS[i : i + 1], cache) for i in range(7, len(IDS))]
    return torch.stack(rows)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_the_second_start_maps_the_same_weights(tiny_model_dir: Path, scheme: Scheme) -> None:
    built, kept = _load(tiny_model_dir, scheme)
    assert not kept and len(list(cache_folder().glob("*.qbw"))) == 1
    mapped, kept = _load(tiny_model_dir, scheme)
    assert kept
    assert torch.equal(_logits(mapped), _logits(built))  # prompt pass and decode steps alike


def test_a_damaged_file_is_rebuilt_with_a_warning(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    built, _ = _load(tiny_model_dir)
    (kept_file,) = cache_folder().glob("*.qbw")
    for damage in (b"", kept_file.read_bytes()[:-100], b"QWENBOTW" + b"\xff" * 64):
        kept_file.write_bytes(damage)  # empty (a full disk), cut short, a garbled header
        with caplog.at_level(logging.WARNING):
            again, kept = _load(tiny_model_dir)
        assert not kept and "damaged" in caplog.text
        assert torch.equal(_logits(again), _logits(built))
        caplog.clear()
    assert _load(tiny_model_dir)[1]  # written again whole


def test_the_folder_stays_under_its_bound(tiny_model_dir: Path, tmp_path: Path) -> None:
    _load(tiny_model_dir, "int8")
    (first,) = cache_folder().glob("*.qbw")
    limit_mb = first.stat().st_size * 3 // 2 // 2**20 + 1  # room for one file, not two
    _load(tiny_model_dir, "int4", limit_mb)
    assert [p.name for p in cache_folder().glob("*.qbw")] != [first.name]
    assert len(list(cache_folder().glob("*.qbw"))) == 1  # the least recently used went


def test_schemes_off_the_packed_kernel_are_not_kept(tiny_model_dir: Path) -> None:
    _load(tiny_model_dir, "int8-dynamic")
    _load(tiny_model_dir, "none")
    assert not cache_folder().exists() or not list(cache_folder().glob("*.qbw"))
