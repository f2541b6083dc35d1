"""A local GGUF file's tokenizer and config, converted from its metadata once and kept.

transformers rebuilds a GGUF file's tokenizer from the metadata on every start (3.2 s for
SmolLM2-135M's 98 MB file on 2 cores) and parses the metadata again for the config (2.5 s).
Saved once as ordinary files, keyed by the file's fingerprint, they load in about 0.1 s.
The entry is derived data: a damaged one is deleted (with a warning) and converted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from engine.loading.fingerprint import model_fingerprint
from engine.loading.gguf_tensors import gguf_path
from engine.loading.model_files import load_config, load_tokenizer
from engine.loading.model_source import ModelSource

log = logging.getLogger(__name__)

COMPLETE = "qwenbot-complete"  # written last: an entry without it is half-written


def cache_folder() -> Path:
    """Where converted GGUF metadata is kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwenbot" / "gguf"


def entry_folder(source: ModelSource) -> Path:
    """The cache entry of one GGUF file (its fingerprint: name, size, mtime, both ends)."""
    key = hashlib.sha256(model_fingerprint(source, None).encode()).hexdigest()[:24]
    return cache_folder() / key


def tokenizer_and_config(source: ModelSource) -> tuple[PreTrainedTokenizerBase, Any]:
    """The tokenizer and config of a model: for a GGUF file (a hub one once downloaded) from
    the cache entry, converted and saved there the first time; else from its files."""
    if not source.gguf_file:
        return load_tokenizer(source), load_config(source)
    if not source.is_local:  # the weights stage needs the file too: fetch it now
        path = gguf_path(source)
        source = ModelSource(str(path.parent), path.name, True, None)
    folder = entry_folder(source)
    if (folder / COMPLETE).is_file():
        try:
            # The entry's tokenizer.json is the whole converted tokenizer: read as it is, not
            # rebuilt by the model's tokenizer class from vocabulary and merges (Qwen3's
            # 151k: 1.5 s against 0.9; the same ids, text and template on every test string).
            kept: PreTrainedTokenizerBase = PreTrainedTokenizerFast.from_pretrained(folder)
            kept_config = AutoConfig.from_pretrained(folder)
            kept_config.name_or_path = source.location  # as if read from the file itself
            return kept, kept_config
        # The Rust tokenizers library reports a damaged tokenizer.json as a plain Exception.
        except Exception as error:  # noqa: BLE001
            log.warning("the converted tokenizer of %s was damaged (%s); converting it again",
                        source.display_name, error)  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
    tokenizer, config = load_tokenizer(source), load_config(source)
    try:
        _save(folder, tokenizer, config)
    except OSError as error:  # a read-only or full disk: the next start converts again
        log.warning("could not keep the converted tokenizer in %s: %s", folder.parent, error)
    return tokenizer, config


def _save(folder: Path, tokenizer: PreTrainedTokenizerBase, config: Any) -> None:
    """Write the entry beside its place and rename it in, so no start reads half of it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".writing-"))
    try:
        tokenizer.save_pretrained(scratch)
        _note_added_tokens(scratch / "tokenizer_config.json", tokenizer)
        config.save_pretrained(scratch)
        (scratch / COMPLETE).write_text("1")
        shutil.rmtree(folder, ignore_errors=True)  # a half-written entry from a crash
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _note_added_tokens(config_file: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Write the added (special) tokens into tokenizer_config.json: without them there,
    transformers parses the whole tokenizer.json in Python once more at every load just to
    find them (0.36 s of Qwen3's 1.0 s)."""
    settings = json.loads(config_file.read_text(encoding="utf-8"))
    settings["added_tokens_decoder"] = {
        str(index): token.__getstate__() for index, token in tokenizer.added_tokens_decoder.items()
    }
    config_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False), encoding="utf-8")
