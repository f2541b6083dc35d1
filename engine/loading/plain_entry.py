"""What a kept tokenizer entry holds so a start on the native decoder never imports transformers.

Beside the tokenizer.json that transformers wrote, one file keeps what transformers would
otherwise work out at every start: the named special tokens, the chat template, the config's
attributes and the generation config's end-of-turn ids. It is written only after the plain
reading gave the same ids, text, chat prompt, end tokens and decoder shape as transformers'
own objects on the first start; any entry without it is read through transformers as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import jinja2
import torch
from tokenizers import Tokenizer

from engine.native.architecture import NativeConfig
from engine.native.parts import UnsupportedArchitecture, rope_frequencies
from engine.text.plain_tokenizer import PlainTokenizer
from engine.text.prompt import stop_token_ids

if TYPE_CHECKING:
    from engine.text.tokenizing import TextTokenizer

PLAIN_FILE = "qwenbot-plain.json"
PROBE = "Hello, world! Xin chào 🌍 <|im_start|>  two  spaces\n\tand 12345."
_CHATS = (
    [{"role": "user", "content": PROBE}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! 👋"},
        {"role": "user", "content": PROBE},
    ],
)


class PlainConfig(SimpleNamespace):
    """A transformers config's attributes, as its to_json_string() wrote them."""


@dataclass(frozen=True)
class ModelFiles:
    """A model's tokenizer and config, and its end-of-turn ids when already known."""

    tokenizer: TextTokenizer
    config: Any  # transformers' config, or a PlainConfig with the same attributes
    end_ids: tuple[int, ...] | None = None  # None: read its generation config


def end_ids_of(eos: object) -> tuple[int, ...]:
    """A generation config's eos_token_id (an id, a list of ids or None) as a tuple."""
    if isinstance(eos, int):
        return (eos,)
    if isinstance(eos, list | tuple):
        return tuple(int(index) for index in eos)
    return ()


def read_plain(folder: Path, location: str, commit: str | None) -> ModelFiles | None:
    """The entry read without transformers, or None when it holds no plain file (or one
    saying the plain reading differs). OSError, ValueError (bad JSON), KeyError or the
    tokenizers library's Exception if damaged."""
    path = folder / PLAIN_FILE
    if not path.is_file():
        return None
    kept = json.loads(path.read_text(encoding="utf-8"))
    if kept is None:
        return None
    tokenizer = PlainTokenizer(
        Tokenizer.from_file(str(folder / "tokenizer.json")),
        kept["special_tokens"],
        kept["chat_template"],
    )
    config = PlainConfig(**kept["config"])
    config.name_or_path, config._commit_hash = location, commit  # as transformers sets them
    return ModelFiles(tokenizer, config, tuple(kept["end_ids"]))


def write_plain(folder: Path, made: Any, config: Any, end_ids: tuple[int, ...]) -> bool:
    """Write the plain file of an entry whose tokenizer.json is written: what a plain start
    needs if reading it plainly behaves as transformers' tokenizer and config do, else
    null (so it is not tried at every start). Whether the plain reading was kept."""
    alike = _plain_alike(folder, made, config, end_ids)
    scratch = folder / f".{PLAIN_FILE}.writing"
    scratch.write_text(json.dumps(alike, ensure_ascii=False), encoding="utf-8")
    os.replace(scratch, folder / PLAIN_FILE)  # whole or not at all, even in a live entry
    return alike is not None


def _plain_alike(
    folder: Path, made: Any, config: Any, end_ids: tuple[int, ...]
) -> dict[str, Any] | None:
    """The plain file's content, or None when the plain reading differs."""
    template = getattr(made, "chat_template", None)
    if template is not None and not isinstance(template, str):
        return None  # a set of named templates: transformers picks one per call
    kept = {
        "special_tokens": dict(made.special_tokens_map),
        "chat_template": template,
        "config": json.loads(config.to_json_string(use_diff=False)),
        "end_ids": list(end_ids),
    }
    plain = PlainTokenizer(
        Tokenizer.from_file(str(folder / "tokenizer.json")),
        kept["special_tokens"],
        template,
    )
    if not (_tokenizes_alike(made, plain, end_ids) and _shapes_alike(config, kept["config"])):
        return None
    return kept


def _tokenizes_alike(made: Any, plain: PlainTokenizer, end_ids: tuple[int, ...]) -> bool:
    """Same ids, text, special ids, end tokens and chat prompts (thinking on and off)."""
    for add_special_tokens in (True, False):
        ids = made(PROBE, add_special_tokens=add_special_tokens)["input_ids"]
        if plain(PROBE, add_special_tokens=add_special_tokens)["input_ids"] != ids:
            return False
        for skip in (True, False):
            text = made.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
            if plain.decode(ids, skip_special_tokens=skip) != text:
                return False
    names = ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id")
    if [getattr(made, name) for name in names] != [getattr(plain, name) for name in names]:
        return False
    if stop_token_ids(made, end_ids) != stop_token_ids(plain, end_ids):
        return False
    if plain.chat_template is None:
        return True
    try:
        return all(
            plain.apply_chat_template(chat, add_generation_prompt=True, enable_thinking=thinking)
            == made.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
            )
            for chat in _CHATS
            for thinking in (True, False)
        )
    except jinja2.TemplateError:  # e.g. a {% generation %} block: transformers renders it
        return False


def _shapes_alike(config: Any, attributes: dict[str, Any]) -> bool:
    """The native decoder reads the same shape and rotary table from both configs."""
    plain = PlainConfig(**attributes)
    try:
        native = NativeConfig.from_transformers(config)
        if NativeConfig.from_transformers(plain) != native:
            return False
        theirs = rope_frequencies(config, native.head_dim)
        ours = rope_frequencies(plain, native.head_dim)
    except (UnsupportedArchitecture, AttributeError, KeyError, TypeError, ValueError):
        return False
    return bool(torch.equal(theirs[0], ours[0])) and theirs[1] == ours[1]
