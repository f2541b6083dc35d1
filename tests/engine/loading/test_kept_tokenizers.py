"""Tokenizers kept ready: a GGUF file's converted from its metadata once, a folder's read
once through its model's class; both read back as they are at the next start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from engine.loading import kept_tokenizers
from engine.loading.kept_tokenizers import COMPLETE, entry_folder, tokenizer_and_config
from engine.loading.model_source import ModelSource
from engine.loading.plain_entry import ModelFiles
from tests.support.smollm2 import smollm2_gguf

MESSAGES = [{"role": "user", "content": "Thủ đô của Pháp là gì?"}]


def _refuse(*_: object) -> None:
    raise AssertionError("the GGUF metadata was converted again")


def _pair(files: ModelFiles) -> tuple[Any, Any]:
    return files.tokenizer, files.config


def test_a_gguf_tokenizer_is_converted_once_then_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gguf = smollm2_gguf()
    source = ModelSource(str(gguf.parent), gguf.name, True, None)
    converted, config = _pair(tokenizer_and_config(source))
    entry = entry_folder(source)
    assert entry.parent == tmp_path / "qwenbot" / "tokenizers" and (entry / COMPLETE).is_file()

    real_tokenizer, real_config = kept_tokenizers.load_tokenizer, kept_tokenizers.load_config
    monkeypatch.setattr(kept_tokenizers, "load_tokenizer", _refuse)
    monkeypatch.setattr(kept_tokenizers, "load_config", _refuse)
    kept, kept_config = _pair(tokenizer_and_config(source))  # the next start: read back
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
        again = tokenizer_and_config(source).tokenizer
    assert "damaged" in caplog.text
    assert again(prompt)["input_ids"] == converted(prompt)["input_ids"]
    assert (entry / COMPLETE).is_file() and "{damaged" not in (entry / "tokenizer.json").read_text()


def test_a_folders_tokenizer_is_kept_and_read_back_alike(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = ModelSource(str(tiny_model_dir), None, True, None)
    own, config = _pair(tokenizer_and_config(source))  # the model's class (Qwen2Tokenizer)
    assert (entry_folder(source) / COMPLETE).is_file()
    monkeypatch.setattr(kept_tokenizers, "load_tokenizer", _refuse)
    kept, kept_config = _pair(tokenizer_and_config(source))
    assert type(kept).__name__ != type(own).__name__  # read as it is, not rebuilt
    prompt = own.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert kept.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == prompt
    assert kept(prompt)["input_ids"] == own(prompt)["input_ids"]
    assert kept.decode(own(prompt)["input_ids"]) == prompt
    assert kept.eos_token_id == own.eos_token_id and kept_config.to_dict() == config.to_dict()


def test_other_architectures_keep_their_own_tokenizer_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    from tests.support.tiny_qwen import build_qwen_tokenizer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "gpt2-like"
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(folder)
    build_qwen_tokenizer().save_pretrained(folder)
    tokenizer_and_config(ModelSource(str(folder), None, True, None))
    assert not (tmp_path / "cache" / "qwenbot" / "tokenizers").exists()


def test_gguf_metadata_read_fast_converts_alike() -> None:
    """transformers' conversion with our metadata reader standing in for the gguf package's:
    the same config, vocabulary, special tokens, chat template and ids."""
    from engine.loading.gguf_metadata import fast_metadata_reader
    from engine.loading.model_files import load_config, load_tokenizer

    gguf = smollm2_gguf()
    source = ModelSource(str(gguf.parent), gguf.name, True, None)
    with fast_metadata_reader():
        fast, fast_config = load_tokenizer(source), load_config(source)
    slow, slow_config = load_tokenizer(source), load_config(source)
    assert fast_config.to_dict() == slow_config.to_dict()
    assert fast.get_vocab() == slow.get_vocab() and fast.chat_template == slow.chat_template
    assert fast.all_special_tokens == slow.all_special_tokens
    prompt = slow.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert fast(prompt)["input_ids"] == slow(prompt)["input_ids"]
