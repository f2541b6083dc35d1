"""The persistent response cache: hits, keys, restarts, single flight, and hostile rows."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
import stat
from pathlib import Path

import pytest

from engine.config import EngineSettings
from engine.engine import Engine
from engine.serving.response_cache import CachedReply, ResponseCache, cache_key
from tests.support.chat import ForwardCounter, request
from tests.support.exploit import TouchOnUnpickle


async def test_repeat_is_served_from_cache_with_identical_text(engine: Engine) -> None:
    first = await engine.generate(request("What is 2+2?"))
    again = await engine.generate(request("What is 2+2?"))
    assert again.text == first.text
    assert again.stats.cache_hit and again.finish_reason == first.finish_reason
    assert again.stats.generated_tokens == first.stats.generated_tokens
    snapshot = engine.snapshot()
    assert snapshot.cache_hits == 1 and snapshot.requests == 2


async def test_cache_survives_a_restart(engine_settings: EngineSettings) -> None:
    engine = Engine(engine_settings)
    await engine.start()
    first = await engine.generate(request("Xin chào, bạn khỏe không?"))
    await engine.close()
    restarted = Engine(engine_settings)
    await restarted.start()
    try:
        again = await restarted.generate(request("Xin chào, bạn khỏe không?"))
    finally:
        await restarted.close()
    assert again.stats.cache_hit and again.text == first.text


async def test_any_change_in_request_misses(engine: Engine) -> None:
    await engine.generate(request("Same words", max_new_tokens=6))
    assert not (await engine.generate(request("Same words", max_new_tokens=7))).stats.cache_hit
    assert not (await engine.generate(request("Same words.", max_new_tokens=6))).stats.cache_hit


async def test_unseeded_sampling_is_never_cached_but_seeded_is(engine: Engine) -> None:
    await engine.generate(request("Pick a word", temperature=0.8))
    assert not (await engine.generate(request("Pick a word", temperature=0.8))).stats.cache_hit
    seeded = await engine.generate(request("Pick a word", temperature=0.8, seed=7))
    repeat = await engine.generate(request("Pick a word", temperature=0.8, seed=7))
    assert repeat.stats.cache_hit and repeat.text == seeded.text


def test_cache_key_changes_with_every_part() -> None:
    base = {
        "model": "local:abc",
        "dtype": "torch.bfloat16",
        "quantization": "none",
        "template": "t1",
        "thinking": False,
        "prompt": "<|im_start|>user\nhi<|im_end|>\n",
        "max_new_tokens": 256,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": None,
    }
    keys = {cache_key(base)}
    changes = {
        "model": "local:abd",
        "dtype": "torch.float32",
        "quantization": "int8",
        "template": "t2",
        "thinking": True,
        "prompt": "<|im_start|>user\nhi!<|im_end|>\n",
        "max_new_tokens": 255,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 1,
    }
    for field, value in changes.items():
        keys.add(cache_key({**base, field: value}))
    assert len(keys) == len(changes) + 1
    assert cache_key(dict(reversed(list(base.items())))) == cache_key(base)  # canonical JSON


async def test_identical_requests_in_flight_share_one_generation(engine: Engine) -> None:
    counter = ForwardCounter(engine.loaded.model)
    same = request("Both of us ask this", max_new_tokens=10)
    first, second = await asyncio.gather(engine.generate(same), engine.generate(same))
    assert first.text == second.text
    assert counter.calls == 10  # one prefill + 9 decode steps: one generation, not two
    assert sorted([first.stats.cache_hit, second.stats.cache_hit]) == [False, True]


def test_cache_directory_is_private(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c", 1 << 20)
    cache.put("k", CachedReply("text", 3, 4, 0.0))
    cache.close()
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700


def _plant_pickle_row(directory: Path, key: str, marker: Path) -> None:
    payload = pickle.dumps(TouchOnUnpickle(marker))
    with sqlite3.connect(directory / "cache.db") as db:
        db.execute("DELETE FROM Cache WHERE key = ?", (key,))
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 0, 4, NULL, ?)",
            (key, sqlite3.Binary(payload)),
        )


def test_tampered_pickle_row_is_refused_and_never_executed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ResponseCache(tmp_path / "c", 1 << 20)
    cache.put("good", CachedReply("fine", 1, 1, 0.0))
    marker = tmp_path / "pwned"
    _plant_pickle_row(tmp_path / "c", "evil", marker)
    assert cache.get("evil") is None
    assert not marker.exists()
    good = cache.get("good")
    assert good is not None and good.text == "fine"
    assert any("pickled value" in r.getMessage() for r in caplog.records)
    cache.close()


async def test_a_corrupt_cache_database_is_moved_aside_and_caching_goes_on(
    engine_settings: EngineSettings, caplog: pytest.LogCaptureFixture
) -> None:
    engine_settings.cache_dir.mkdir(parents=True)
    (engine_settings.cache_dir / "cache.db").write_bytes(b"this is not a sqlite database" * 100)
    engine = Engine(engine_settings)
    await engine.start()
    try:
        first = await engine.generate(request("Hello"))
        second = await engine.generate(request("Hello"))
    finally:
        await engine.close()
    assert first.text == second.text and second.stats.cache_hit
    warnings = [r.getMessage() for r in caplog.records if "was damaged" in r.getMessage()]
    assert len(warnings) == 1 and "reply cache" in warnings[0]
    assert list(engine_settings.cache_dir.parent.glob("responses.damaged-*"))


def test_non_text_values_are_refused_on_write(tmp_path: Path) -> None:
    from engine.serving.json_store import open_json_store

    store = open_json_store(tmp_path / "s", 1 << 20, "test store")
    with pytest.raises(TypeError):
        store.set("k", {"a": 1})
    with pytest.raises(TypeError):
        store.set(("tuple", "key"), "v")
    store.close()


async def test_in_flight_sharing_works_without_the_disk_cache(
    engine_settings: EngineSettings,
) -> None:
    engine = Engine(engine_settings.model_copy(update={"cache_enabled": False}))
    await engine.start()
    counter = ForwardCounter(engine.loaded.model)
    same = request("Both of us ask this", max_new_tokens=10)
    try:
        first, second = await asyncio.gather(engine.generate(same), engine.generate(same))
        later = await engine.generate(same)
    finally:
        await engine.close()
    assert first.text == second.text == later.text
    assert counter.calls == 20  # the pair shared one generation; the later one ran again
    assert not later.stats.cache_hit


def test_a_reply_cut_at_the_limit_is_replayed_as_cut_and_old_entries_read_as_stopped(
    tmp_path: Path,
) -> None:
    from engine.serving.json_store import dumps

    cache = ResponseCache(tmp_path / "c", 1 << 20)
    cache.put("cut", CachedReply("a long", 3, 4, 0.0, "length"))
    # An entry written before replies kept their finish reason.
    cache._store.set("old", dumps({"text": "hi", "prompt_tokens": 1, "generated_tokens": 1,  # type: ignore[union-attr]
                                   "created_at": 0.0}))  # fmt: skip
    assert cache.get("cut") == CachedReply("a long", 3, 4, 0.0, "length")
    assert cache.get("old") == CachedReply("hi", 1, 1, 0.0, "stop")
    cache.close()
