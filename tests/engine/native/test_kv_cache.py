"""The KV cache takes a conversation's room at once and counts only the memory it writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine.native.kv_cache import GROWTH_STEP, PAGE, KVCache

ROOT = Path(__file__).resolve().parents[3]


def small_cache(max_tokens: int) -> KVCache:
    return KVCache(layers=2, kv_heads=2, head_dim=8, dtype=torch.float32, max_tokens=max_tokens)


def test_cache_refuses_tokens_beyond_its_limit() -> None:
    cache = KVCache(layers=1, kv_heads=1, head_dim=4, dtype=torch.float32, max_tokens=8)
    cache.reserve(8)
    with pytest.raises(ValueError, match="exceed"):
        cache.reserve(9)


def test_the_room_is_taken_once_and_never_moves() -> None:
    cache = small_cache(4096)
    cache.reserve(10)
    assert cache.capacity == 4096
    keys, values = cache.keys.data_ptr(), cache.values.data_ptr()
    cache.write(0, torch.ones(2, 10, 8), torch.ones(2, 10, 8))
    cache.length = 10
    cache.reserve(3000)  # a later turn of the same conversation: nothing is copied
    assert (cache.keys.data_ptr(), cache.values.data_ptr()) == (keys, values)
    assert bool(cache.keys[0, :, :10].eq(1).all())


def test_room_never_written_is_not_counted_as_memory() -> None:
    roomy, tight = small_cache(100_000), small_cache(64)
    for cache in (roomy, tight):
        cache.reserve(40)
        cache.length = 40
    assert roomy.capacity == 100_000 and tight.capacity == 64
    assert roomy.nbytes == tight.nbytes == 2 * 2 * 2 * PAGE  # one page per row of 40 tokens
    roomy.truncate(5)
    assert roomy.nbytes == tight.nbytes  # the pages stay mapped until the cache is dropped


def test_where_address_space_is_limited_the_cache_grows_in_steps() -> None:
    # A full room of a million tokens is 4 GB of address space: refused under this limit.
    script = textwrap.dedent(
        """
        import resource
        import psutil
        import torch
        from engine.native.kv_cache import KVCache
        torch.set_num_threads(1)
        limit = psutil.Process().memory_info().vms + 256 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        cache = KVCache(layers=4, kv_heads=2, head_dim=64, dtype=torch.float32,
                        max_tokens=1_000_000)
        cache.reserve(100)
        cache.write(3, torch.full((2, 100, 64), 7.0), torch.full((2, 100, 64), 8.0))
        cache.length = 100
        first = cache.capacity
        cache.reserve(300)
        kept = bool(cache.keys[3, :, :100].eq(7).all() and cache.values[3, :, :100].eq(8).all())
        print(first, cache.capacity, kept)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(GROWTH_STEP), str(2 * GROWTH_STEP), "True"]
