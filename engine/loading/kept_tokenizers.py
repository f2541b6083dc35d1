"""A model's tokenizer (and a GGUF file's config) kept ready to read, converted once.

transformers rebuilds a GGUF file's tokenizer from the metadata on every start (3.2 s for
SmolLM2-135M's 98 MB file on 2 cores, ~20 s for Qwen3's 151k-token vocabulary) and parses
the metadata again for the config. A folder's tokenizer is rebuilt by its model's class from
vocabulary and merges (Qwen3: 1.5 s). Kept once as the tokenizer's own tokenizer.json (with
its added tokens noted) and read back as it is, either takes 0.5 s. Only for the
architectures the native decoder runs, whose tokenizers live wholly in tokenizer.json; and
only when reading the kept files back gives the same ids, text and chat prompt. Entries are
keyed by the model's fingerprint; a damaged one is deleted (with a warning) and rebuilt.
An entry also keeps what a start on the native decoder needs to read it without importing
transformers at all (0.6 s more): see plain_entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelLoadFailed
from engine.loading.fingerprint import model_fingerprint
from engine.loading.gguf_index import GGUFFormatError
from engine.loading.gguf_metadata import fast_metadata_reader
from engine.loading.gguf_tensors import gguf_path
from engine.loading.model_files import load_config, load_generation_config, load_tokenizer
from engine.loading.model_source import ModelSource
from engine.loading.plain_entry import (
    PLAIN_FILE,
    PROBE,
    ModelFiles,
    end_ids_of,
    read_plain,
    write_plain,
)
from engine.native.architecture import SUPPORTED_TYPES

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

COMPLETE = "qwenbot-complete"  # written last: an entry without it is half-written


def cache_folder() -> Path:
    """Where kept tokenizers are."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwenbot" / "tokenizers"


def entry_folder(source: ModelSource, commit: str | None = None) -> Path:
    """The cache entry of one model (its fingerprint: for files their names, sizes, times
    and both ends; for a hub model its commit)."""
    key = hashlib.sha256(model_fingerprint(source, commit).encode()).hexdigest()[:24]
    return cache_folder() / key


def tokenizer_and_config(source: ModelSource, plain: bool = False) -> ModelFiles:
    """The tokenizer and config of a model, the tokenizer (and a GGUF file's config) from
    its kept entry when there is one, else converted and kept for the next start. With
    plain (the native decoder will run it), an entry kept with its plain file is read
    without importing transformers."""
    if source.gguf_file and not source.is_local:  # the weights stage needs the file too
        path = gguf_path(source)
        source = ModelSource(str(path.parent), path.name, True, None)
    if plain and (source.is_local or source.commit):
        commit = None if source.is_local else source.commit
        folder = entry_folder(source, commit)
        if (folder / COMPLETE).is_file():
            try:
                files = read_plain(folder, source.location, commit)
            # Damage shows as OSError, bad JSON (ValueError), a missing key, or the Rust
            # tokenizers library's plain Exception.
            except Exception as error:  # noqa: BLE001
                _drop_damaged(folder, source, error)
            else:
                if files is not None:
                    return files
    return _through_transformers(source)


def _through_transformers(source: ModelSource) -> ModelFiles:
    """tokenizer_and_config by transformers: a kept entry read through it, or the model's
    own files converted and kept."""
    from transformers import AutoConfig, PreTrainedTokenizerFast  # noqa: PLC0415  (0.6 s)

    config, commit = None, None
    if not source.gguf_file:
        config = load_config(source)  # a folder's config.json: quick
        commit = getattr(config, "_commit_hash", None) or source.commit
        if getattr(config, "model_type", None) not in SUPPORTED_TYPES or not (
            source.is_local or commit
        ):
            return ModelFiles(load_tokenizer(source), config)
    folder = entry_folder(source, commit)
    if (folder / COMPLETE).is_file():
        try:
            # Read as it is, not rebuilt by the model's tokenizer class (see above).
            kept: PreTrainedTokenizerBase = PreTrainedTokenizerFast.from_pretrained(folder)
            if config is None:  # a GGUF file's, converted from its metadata
                config = AutoConfig.from_pretrained(folder)
                config.name_or_path = source.location  # as if read from the file itself
        # The Rust tokenizers library reports a damaged tokenizer.json as a plain Exception.
        except Exception as error:  # noqa: BLE001
            _drop_damaged(folder, source, error)
        else:
            if not (folder / PLAIN_FILE).is_file():  # an entry kept by an earlier version
                return ModelFiles(kept, config, _add_plain(folder, source, kept, config))
            return ModelFiles(kept, config)
    if config is None:
        tokenizer, config = _convert_gguf(source)
    else:
        tokenizer = load_tokenizer(source)
    if not tokenizer.is_fast:
        return ModelFiles(tokenizer, config)
    end_ids = end_ids_of(load_generation_config(source, config).eos_token_id)
    try:
        _save(folder, tokenizer, config, bool(source.gguf_file), end_ids)
    except OSError as error:  # a read-only or full disk: the next start converts again
        log.warning("could not keep the tokenizer in %s: %s", folder.parent, error)
    return ModelFiles(tokenizer, config, end_ids)


def _add_plain(folder: Path, source: ModelSource, tokenizer: Any, config: Any) -> tuple[int, ...]:
    """Give an entry kept without a plain file one, for the next start; the end-of-turn ids
    it read on the way (bootstrap need not read them again)."""
    end_ids = end_ids_of(load_generation_config(source, config).eos_token_id)
    try:
        write_plain(folder, tokenizer, config, end_ids)
    except OSError as error:  # a read-only or full disk: read through transformers
        log.warning("could not keep the tokenizer in %s: %s", folder.parent, error)
    return end_ids


def _drop_damaged(folder: Path, source: ModelSource, error: Exception) -> None:
    """Delete a damaged entry (it is converted again), saying so."""
    log.warning("the kept tokenizer of %s was damaged (%s); converting it again",
                source.display_name, error)  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)


def _convert_gguf(source: ModelSource) -> tuple[PreTrainedTokenizerBase, Any]:
    """A GGUF file's tokenizer and config by transformers, its metadata read by our reader
    (Qwen3-0.6B Q8_0: 20 s -> 3 s); by the gguf package's own if that fails."""
    try:
        with fast_metadata_reader():
            return load_tokenizer(source), load_config(source)
    except (ModelLoadFailed, GGUFFormatError, AttributeError, TypeError, IndexError) as error:
        log.info("reading %s's metadata fast failed (%s); reading it with the gguf package",
                 source.display_name, error)  # fmt: skip
        return load_tokenizer(source), load_config(source)


def _save(
    folder: Path, tokenizer: Any, config: Any, with_config: bool, end_ids: tuple[int, ...]
) -> None:
    """Write the entry beside its place and rename it in, so no start reads half of it;
    kept only when it reads back as the same tokenizer, with its plain file when that
    reads alike too."""
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415  (already loaded)

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".writing-"))
    try:
        tokenizer.save_pretrained(scratch)
        _note_added_tokens(scratch / "tokenizer_config.json", tokenizer)
        if with_config:
            config.save_pretrained(scratch)
        if not _same(tokenizer, PreTrainedTokenizerFast.from_pretrained(scratch)):
            log.info("%s's tokenizer does not read back alike; not kept", folder.name)
            return
        if not write_plain(scratch, tokenizer, config, end_ids):
            log.info("%s's tokenizer is kept for transformers only", folder.name)
        (scratch / COMPLETE).write_text("1")
        shutil.rmtree(folder, ignore_errors=True)  # a half-written entry from a crash
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _same(made: PreTrainedTokenizerBase, kept: PreTrainedTokenizerBase) -> bool:
    """Whether the kept tokenizer encodes, decodes and renders chats as the model's own."""
    ids = made(PROBE)["input_ids"]
    if kept(PROBE)["input_ids"] != ids or kept.decode(ids) != made.decode(ids):
        return False
    if (kept.eos_token_id, kept.bos_token_id, kept.pad_token_id) != (
        made.eos_token_id, made.bos_token_id, made.pad_token_id,
    ):  # fmt: skip
        return False
    if not getattr(made, "chat_template", None):
        return not getattr(kept, "chat_template", None)
    turns = [{"role": "user", "content": PROBE}]
    return bool(
        kept.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        == made.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    )


def _note_added_tokens(config_file: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Write the added (special) tokens into tokenizer_config.json: without them there,
    transformers parses the whole tokenizer.json in Python once more at every load just to
    find them (0.36 s of Qwen3's 1.0 s)."""
    settings = json.loads(config_file.read_text(encoding="utf-8"))
    settings["added_tokens_decoder"] = {
        str(index): token.__getstate__() for index, token in tokenizer.added_tokens_decoder.items()
    }
    config_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False), encoding="utf-8")
