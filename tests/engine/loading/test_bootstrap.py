"""Loading, thread planning, quantisation and compile switches with their fallbacks."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from engine.config import EngineSettings
from engine.engine import Engine
from engine.errors import ModelNotFound
from engine.loading import machine
from engine.loading.machine import plan_threads, resolve_dtype
from engine.loading.quantize import Int8WeightOnlyLinear
from engine.native.cpu_features import cpu_has_native_bf16
from tests.support.chat import request


def test_explicit_thread_count_wins() -> None:
    assert plan_threads(3, cap=8, interop=1).intra_op == 3


def test_auto_threads_follow_affinity_and_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda _pid: set(range(32)))
    monkeypatch.setattr(machine.psutil, "cpu_count", lambda logical=True: 64 if logical else 32)
    plan = plan_threads(None, cap=8, interop=1)
    assert plan.intra_op == 8 and "capped" in plan.reason
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert plan_threads(None, cap=8, interop=1).intra_op == 2  # 4 logical CPUs = 2 cores (SMT)


def test_auto_dtype_is_bf16_only_with_native_support() -> None:
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32


async def test_effective_config_reports_what_runs(engine: Engine) -> None:
    config = engine.effective
    assert config.model == Path(engine.settings.model).name
    assert config.device == "cpu" and config.backend == "native" and not config.compiled
    assert config.quantization == "int8"  # the CPU default: auto = the fastest faithful scheme
    assert config.threads == torch.get_num_threads()
    summary = config.summary()
    assert "native decoder" in summary and "quantization int8" in summary
    assert f"prompts {engine.effective.prompts}" in summary and engine.effective.prompts
    assert "compile off" in summary


async def test_each_loading_stage_logs_one_line_with_its_duration(
    engine_settings: EngineSettings, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[tuple[str, float]] = []
    engine = Engine(engine_settings.model_copy(update={"warmup": True}))
    with caplog.at_level(logging.INFO, logger="engine"):
        await engine.start(lambda stage, fraction: reports.append((stage, fraction)))
    await engine.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.loading.stages"]
    expected = ["found model", "torch threads: ", "loaded the tokenizer", "loaded weights (int8"]
    expected.append("warmed up")
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start) and re.search(r" in \d+\.\d s$", line), lines
    # The bar moves forward only, through the native decoder's layers, and ends ready.
    fractions = [fraction for _, fraction in reports]
    assert fractions == sorted(fractions) and reports[-1] == ("Ready", 1.0)
    assert len({stage for stage, _ in reports if stage.startswith("Loading weights")}) == 1


async def test_transformers_backend_int8_replaces_linear_layers_and_still_answers(
    engine_settings: EngineSettings,
) -> None:
    engine = Engine(
        engine_settings.model_copy(update={"quantization": "int8", "backend": "transformers"})
    )
    await engine.start()
    try:
        assert engine.effective.quantization == "int8-torch"  # the same weights, torch's kernel
        assert engine.effective.backend == "transformers"
        model = engine.loaded.model
        assert isinstance(model, PreTrainedModel)
        assert isinstance(model.get_output_embeddings(), Int8WeightOnlyLinear)
        assert not any(type(m) is torch.nn.Linear for m in model.modules())
        reply = await engine.generate(request("Hello", max_new_tokens=6))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 6


async def test_int8_outputs_track_the_full_precision_model(engine_settings: EngineSettings) -> None:
    logits = {}
    for quantization in ("none", "int8"):
        update = {"quantization": quantization, "dtype": "float32", "backend": "transformers"}
        engine = Engine(engine_settings.model_copy(update=update))
        await engine.start()
        ids = torch.tensor([engine.prepare(request("Hello there").messages).ids])
        model = engine.loaded.model
        assert isinstance(model, PreTrainedModel)
        with torch.inference_mode():
            logits[quantization] = model(input_ids=ids).logits[0, -1].float()
        await engine.close()
    cosine = torch.nn.functional.cosine_similarity(logits["none"], logits["int8"], dim=0)
    assert cosine > 0.99


async def test_bnb8_without_bitsandbytes_falls_back_to_torchs_int8(
    engine_settings: EngineSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def no_bitsandbytes(name: str, *args: Any) -> Any:
        return None if name == "bitsandbytes" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_bitsandbytes)
    engine = Engine(engine_settings.model_copy(update={"quantization": "bnb8"}))
    with caplog.at_level(logging.WARNING):
        await engine.start()
    try:
        assert engine.effective.quantization == "int8-torch"  # the same weights, torch's kernel
        assert engine.effective.backend == "transformers"  # bitsandbytes is a transformers path
    finally:
        await engine.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "native decoder unavailable (bitsandbytes" in warnings[0]
    assert "bitsandbytes 8-bit unavailable" in warnings[1]
    assert "using int8-torch instead" in warnings[1]


async def test_failing_compile_falls_back_to_eager(
    engine_settings: EngineSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_compile(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(torch, "compile", broken_compile)
    update = {"compile": True, "backend": "transformers"}
    engine = Engine(engine_settings.model_copy(update=update))
    with caplog.at_level(logging.WARNING):
        await engine.start()
    try:
        assert not engine.effective.compiled
        reply = await engine.generate(request("Hi", max_new_tokens=3))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 3
    assert any("torch.compile unavailable" in r.getMessage() for r in caplog.records)


async def test_missing_local_model_says_how_to_fix(tmp_path: Path) -> None:
    engine = Engine(EngineSettings(model=str(tmp_path / "nowhere.gguf"), cache_enabled=False))
    with pytest.raises(ModelNotFound, match="ENGINE__MODEL"):
        await engine.start()
    await engine.close()


async def test_uncached_hub_model_without_network_says_how_to_fix(tmp_path: Path) -> None:
    settings = EngineSettings(model="qwenbot-tests/no-such-model", cache_enabled=False)
    engine = Engine(settings)
    with pytest.raises(ModelNotFound) as caught:
        await engine.start()
    await engine.close()
    message = str(caught.value)
    assert "\n" not in message and "ENGINE__MODEL" in message and ".gguf" in message


async def test_cached_hub_model_loads_from_the_cache_alone(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--qwenbot-tests--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    engine = Engine(EngineSettings(model="qwenbot-tests/tiny", cache_enabled=False, warmup=False))
    await engine.start()
    try:
        assert engine.loaded.source.cached
        assert engine.loaded.fingerprint == f"hub:qwenbot-tests/tiny@{commit}"
        assert engine.effective.model == "qwenbot-tests/tiny"
        reply = await engine.generate(request("Hi", max_new_tokens=3))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 3


async def test_a_hub_gguf_file_runs_on_the_native_decoder_in_its_own_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENGINE__MODEL=<repo> with ENGINE__GGUF_FILE: the file from the hub cache, its blocks
    kept (SmolLM2's Q4_1 and Q8_0: 4 and 8 bits); the second start maps the packed weights."""
    import shutil

    import huggingface_hub

    from tests.support.smollm2 import GGUF_NAME, smollm2_gguf

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--qwenbot-tests--smollm2-gguf"
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(smollm2_gguf(), repo / "snapshots" / commit / GGUF_NAME)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = EngineSettings(
        model="qwenbot-tests/smollm2-gguf", gguf_file=GGUF_NAME, cache_enabled=False, warmup=False
    )
    replies = []
    for _ in range(2):
        engine = Engine(settings)
        with caplog.at_level(logging.INFO):
            await engine.start()
        try:
            assert engine.effective.backend == "native"
            assert engine.effective.quantization == "int4+int8 (as in the GGUF file)"
            replies.append(await engine.generate(request("What is the capital of France?")))
        finally:
            await engine.close()
    assert "Paris" in replies[0].text and replies[1].token_ids == replies[0].token_ids
    assert "mapped from the packed cache" in caplog.text


async def test_compiled_model_gives_the_same_greedy_tokens(engine_settings: EngineSettings) -> None:
    replies = {}
    for compiled in (False, True):
        update = {
            "compile": compiled,
            "cache_enabled": False,
            "dtype": "float32",
            "backend": "transformers",  # compile applies to transformers' forward pass
            "quantization": "none",
        }
        engine = Engine(engine_settings.model_copy(update=update))
        await engine.start()
        try:
            assert engine.effective.compiled is compiled
            replies[compiled] = await engine.generate(request("Hello there", max_new_tokens=10))
        finally:
            await engine.close()
    assert replies[True].token_ids == replies[False].token_ids
