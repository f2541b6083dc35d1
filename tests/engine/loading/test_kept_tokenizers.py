"""A GGUF file's tokenizer and config: converted from its metadata once, then read back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.loading import kept_tokenizers
from engine.loading.kept_tokenizers import COMPLETE, entry_folder, tokenizer_and_config
from engine.loading.model_source import ModelSource
from tests.support.smollm2 import smollm2_gguf

MESSAGES = [{"role": "user", "content": "Thủ đô của Pháp là gì?"}]


def _refuse(*_: object) -> None:
    raise AssertionError("the GGUF metadata was converted again")


def test_a_gguf_tokenizer_is_converted_once_then_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gguf = smollm2_gguf()
    source = ModelSource(str(gguf.parent), gguf.name, True, None)
    converted, config = tokenizer_and_config(source)
    entry = entry_folder(source)
    assert entry.parent == tmp_path / "qwenbot" / "gguf" and (entry / COMPLETE).is_file()

    real_tokenizer, real_config = kept_tokenizers.load_tokenizer, kept_tokenizers.load_config
    monkeypatch.setattr(kept_tokenizers, "load_tokenizer", _refuse)
    monkeypatch.setattr(kept_tokenizers, "load_config", _refuse)
    kept, kept_config = tokenizer_and_config(source)  # the next start: read back, not converted
    prompt = converted.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert kept.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == prompt
    assert kept(prompt)["input_ids"] == converted(prompt)["input_ids"]
    assert kept.eos_token_id == converted.eos_token_id
    assert kept_config.to_dict() | {"transformers_version": None} == config.to_dict() | {
        "transformers_version": None
    }

    (entry / "tokenizer.json").write_text("{damaged")  # a disk fault
    monkeypatch.setattr(kept_tokenizers, "load_tokenizer", real_tokenizer)
    monkeypatch.setattr(kept_tokenizers, "load_config", real_config)
    with caplog.at_level(logging.WARNING):
        again, _ = tokenizer_and_config(source)
    assert "damaged" in caplog.text
    assert again(prompt)["input_ids"] == converted(prompt)["input_ids"]
    assert (entry / COMPLETE).is_file() and "{damaged" not in (entry / "tokenizer.json").read_text()
