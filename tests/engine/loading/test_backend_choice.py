"""Which decoder runs a model, and the one-line fallbacks when the fast path cannot."""

from __future__ import annotations

import logging
import shutil
import types
from pathlib import Path

import pytest
import torch
import transformers

from engine.config import EngineSettings
from engine.engine import Engine
from engine.native.model import NativeDecoder
from tests.support.chat import request


async def _greedy_tokens(settings: EngineSettings) -> tuple[int, ...]:
    engine = Engine(settings)
    await engine.start()
    try:
        reply = await engine.generate(request("Hello there", max_new_tokens=10))
    finally:
        await engine.close()
    return reply.token_ids


async def test_native_and_transformers_decoders_answer_alike(
    engine_settings: EngineSettings,
) -> None:
    base = {"quantization": "none", "dtype": "float32", "cache_enabled": False}
    native = await _greedy_tokens(engine_settings.model_copy(update=base))
    library = await _greedy_tokens(
        engine_settings.model_copy(update={**base, "backend": "transformers"})
    )
    assert len(native) == 10 and native == library


async def test_int4_option_runs_natively_and_answers(engine_settings: EngineSettings) -> None:
    engine = Engine(engine_settings.model_copy(update={"quantization": "int4"}))
    await engine.start()
    try:
        assert engine.effective.quantization == "int4" and engine.effective.backend == "native"
        reply = await engine.generate(request("Hello there", max_new_tokens=5))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 5


async def test_missing_fbgemm_falls_back_to_int8_with_one_warning(
    engine_settings: EngineSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A torch build without fbgemm's quantized ops (they are deprecated upstream).
    monkeypatch.setattr(torch.ops, "quantized", types.SimpleNamespace())
    engine = Engine(engine_settings.model_copy(update={"quantization": "int8-dynamic"}))
    with caplog.at_level(logging.WARNING):
        await engine.start()
    try:
        assert engine.effective.quantization == "int8"
        fallbacks = engine.effective.fallbacks
        reply = await engine.generate(request("Hi", max_new_tokens=3))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "fbgemm dynamic int8 kernel unavailable" in warnings[0]
    assert "\n" not in warnings[0] and fallbacks == (warnings[0],)


async def test_compile_is_declined_for_the_native_decoder(
    engine_settings: EngineSettings, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(engine_settings.model_copy(update={"compile": True}))
    with caplog.at_level(logging.WARNING):
        await engine.start()
    try:
        assert not engine.effective.compiled and engine.effective.backend == "native"
        reply = await engine.generate(request("Hi", max_new_tokens=3))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 3
    assert any("torch.compile unavailable (no gain" in r.getMessage() for r in caplog.records)


@pytest.fixture
def tiny_gpt2_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """An architecture the native decoder does not implement, with the Qwen tokenizer."""
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, folder / name)
    config = transformers.GPT2Config(
        vocab_size=151936, n_embd=32, n_layer=1, n_head=2, n_positions=512
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


async def test_other_architectures_run_on_transformers(
    tiny_gpt2_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = EngineSettings(
        model=str(tiny_gpt2_dir), cache_dir=tmp_path / "responses", max_new_tokens=4
    )
    engine = Engine(settings)
    with caplog.at_level(logging.WARNING):
        await engine.start()
    try:
        assert engine.effective.backend == "transformers"
        assert not isinstance(engine.loaded.model, NativeDecoder)
        assert engine.effective.quantization == "int8-torch"  # auto on a CPU: torch's kernel
        reply = await engine.generate(request("Hi", max_new_tokens=4))
    finally:
        await engine.close()
    assert reply.stats.generated_tokens == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "native decoder unavailable (unsupported model type 'gpt2'); using transformers instead"
    ]
