"""A kept tokenizer read without transformers: the same prompts, ids and text as transformers',
and a second start on the native decoder that never imports transformers at all."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from engine.loading.kept_tokenizers import entry_folder, tokenizer_and_config
from engine.loading.model_source import ModelSource
from engine.loading.plain_entry import PLAIN_FILE, write_plain
from engine.text.detokenizer import IncrementalDetokenizer
from engine.text.plain_tokenizer import PlainTokenizer
from engine.text.prompt import render_chat
from tests.support.smollm2 import smollm2_gguf
from tests.support.tiny_qwen import build_qwen_tokenizer

ROOT = Path(__file__).parents[3]
CHAT = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Thủ đô của Pháp là gì? 🇫🇷"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Việt Nam?"},
]


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _turns() -> list[object]:
    from engine.events import ChatTurn

    return [ChatTurn(turn["role"], turn["content"]) for turn in CHAT]  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["folder", "gguf"])
def test_the_second_read_is_plain_and_gives_what_transformers_gave(
    kind: str, tiny_model_dir: Path
) -> None:
    if kind == "folder":
        source = ModelSource(str(tiny_model_dir), None, True, None)
    else:  # SmolLM2: a Llama tokenizer with a BOS token, converted from GGUF metadata
        gguf = smollm2_gguf()
        source = ModelSource(str(gguf.parent), gguf.name, True, None)
    first = tokenizer_and_config(source, plain=True)  # converted by transformers, then kept
    second = tokenizer_and_config(source, plain=True)
    made, plain = first.tokenizer, second.tokenizer
    assert not isinstance(made, PlainTokenizer) and isinstance(plain, PlainTokenizer)
    for thinking in (True, False):
        prompt = render_chat(made, _turns(), enable_thinking=thinking)  # type: ignore[arg-type]
        assert render_chat(plain, _turns(), enable_thinking=thinking) == prompt  # type: ignore[arg-type]
        for special in (True, False):
            ids = made(prompt, add_special_tokens=special)["input_ids"]
            assert plain(prompt, add_special_tokens=special)["input_ids"] == ids
    assert second.end_ids == first.end_ids and second.end_ids
    assert (plain.eos_token_id, plain.bos_token_id) == (made.eos_token_id, made.bos_token_id)
    for name in ("model_type", "hidden_size", "num_hidden_layers", "rms_norm_eps", "vocab_size"):
        assert getattr(second.config, name) == getattr(first.config, name)
    assert second.config.name_or_path == source.location


def test_text_streams_out_alike_character_by_character() -> None:
    made = build_qwen_tokenizer()
    text = "Phở bò 🍜 và bánh mì — ngon! 👍🏽"
    ids = made(text, add_special_tokens=False)["input_ids"] + [151645]  # then <|im_end|>
    plain = PlainTokenizer(made.backend_tokenizer, made.special_tokens_map, made.chat_template)
    pieces = {}
    for name, tokenizer in (("made", made), ("plain", plain)):
        stream = IncrementalDetokenizer(tokenizer)  # type: ignore[arg-type]
        pieces[name] = [stream.push(token) for token in ids] + [stream.flush()]
    assert pieces["plain"] == pieces["made"] and "".join(pieces["plain"]) == text


def test_a_template_transformers_would_render_differently_stays_with_transformers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    made = build_qwen_tokenizer()
    # {% generation %} marks what the assistant wrote (for training masks): transformers
    # knows the tag, the plain renderer does not.
    made.chat_template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
        "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}"
    )
    folder = tmp_path / "entry"
    made.save_pretrained(folder)
    config = transformers.AutoConfig.from_pretrained(tiny_model_dir)
    assert not write_plain(folder, made, config, (151645,))
    assert json.loads((folder / PLAIN_FILE).read_text()) is None  # not tried at every start
    assert write_plain(folder, build_qwen_tokenizer(), config, (151645,))


def test_a_damaged_plain_file_is_converted_again(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ModelSource(str(tiny_model_dir), None, True, None)
    made = tokenizer_and_config(source, plain=True).tokenizer
    plain_file = entry_folder(source) / PLAIN_FILE
    plain_file.write_text('{"special_tokens": {')  # a disk fault
    with caplog.at_level(logging.WARNING):
        again = tokenizer_and_config(source, plain=True)
    assert "damaged" in caplog.text
    assert again.tokenizer("Hi there")["input_ids"] == made("Hi there")["input_ids"]
    assert isinstance(tokenizer_and_config(source, plain=True).tokenizer, PlainTokenizer)
    assert json.loads(plain_file.read_text())["chat_template"] == made.chat_template


def test_an_entry_kept_before_plain_files_gets_one(tiny_model_dir: Path) -> None:
    source = ModelSource(str(tiny_model_dir), None, True, None)
    tokenizer_and_config(source, plain=True)
    (entry_folder(source) / PLAIN_FILE).unlink()  # as an earlier version kept it
    assert not isinstance(tokenizer_and_config(source, plain=True).tokenizer, PlainTokenizer)
    assert isinstance(tokenizer_and_config(source, plain=True).tokenizer, PlainTokenizer)


@pytest.mark.slow
def test_a_second_native_start_never_imports_transformers(tiny_model_dir: Path) -> None:
    """A fresh process, as a restarted bot: the kept tokenizer and packed weights are read,
    the decoder warmed up and asked for tokens, and transformers never loaded."""
    from engine.config import EngineSettings
    from engine.loading.bootstrap import bootstrap

    bootstrap(EngineSettings(model=str(tiny_model_dir), warmup=False))  # the first start
    script = f"""
import sys
from engine.config import EngineSettings
from engine.loading.bootstrap import bootstrap
from engine.text.prompt import encode_prompt, render_chat
from engine.events import ChatTurn
loaded = bootstrap(EngineSettings(model={str(tiny_model_dir)!r}))
text = render_chat(loaded.tokenizer, [ChatTurn("user", "Hi")], False)
prompt = encode_prompt(loaded.tokenizer, text)
cache = loaded.model.new_cache(64)
logits = loaded.model.forward(__import__("torch").tensor(prompt), cache)
print(type(loaded.tokenizer).__name__, loaded.backend, "transformers" in sys.modules, len(prompt))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
        env=os.environ.copy(), timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    name, backend, imported, length = done.stdout.split()
    assert (name, backend, imported) == ("PlainTokenizer", "native", "False") and int(length) > 3
