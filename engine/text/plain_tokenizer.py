"""A kept tokenizer read with the tokenizers library alone, not through transformers.

Importing transformers costs ~0.6 s of a 3 s one-question start on 2 cores, and the native
decoder needs nothing else from it. A tokenizer whose whole behaviour lives in its
tokenizer.json (the fast tokenizers of the architectures the native decoder runs) is read
here with the few facts transformers adds kept beside it: its named special tokens, their
ids and its chat template. It offers the part of transformers' tokenizer interface the
engine uses, with the same results (checked before such a tokenizer is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2
from tokenizers import Tokenizer

from engine.text.chat_template import compile_chat_template, render_chat_template


class PlainTokenizer:
    """tokenizer.json plus the special tokens and chat template transformers would add."""

    is_fast = True

    def __init__(
        self,
        backend: Tokenizer,
        special_tokens: dict[str, str],
        chat_template: str | None,
    ) -> None:
        self.backend = backend
        self.special_tokens = dict(special_tokens)  # "eos_token": "<|im_end|>", ...
        self.chat_template = chat_template
        self._template: jinja2.Template | None = None  # compiled at first use

    @property
    def eos_token_id(self) -> int | None:
        """The end-of-sequence token's id, as transformers' eos_token_id."""
        return self._special_id("eos_token")

    @property
    def bos_token_id(self) -> int | None:
        """The beginning-of-sequence token's id."""
        return self._special_id("bos_token")

    @property
    def pad_token_id(self) -> int | None:
        """The padding token's id."""
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        """The unknown token's id."""
        return self._special_id("unk_token")

    def _special_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        """{"input_ids": ids} of one text, as transformers' tokenizer(text)."""
        encoding = self.backend.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": list(encoding.ids)}

    def decode(
        self,
        token_ids: Sequence[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        """The text of token ids. Never "cleans up" spaces before punctuation: the engine
        shows text as generated, and only asks for that."""
        if clean_up_tokenization_spaces:
            raise ValueError("a plain tokenizer decodes text as generated only")
        return str(self.backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def convert_tokens_to_ids(self, token: str) -> int | None:
        """A token's id; the unknown token's (or None) when it is not in the vocabulary."""
        index = self.backend.token_to_id(token)
        return self.unk_token_id if index is None else int(index)

    def convert_ids_to_tokens(self, index: int) -> str | None:
        """The token of an id."""
        token = self.backend.id_to_token(index)
        return None if token is None else str(token)

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        **variables: Any,
    ) -> str:
        """The prompt text of a conversation, as transformers' apply_chat_template with
        tokenize=False."""
        if tokenize:
            raise ValueError("a plain tokenizer renders the prompt as text; encode it after")
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        if self._template is None:
            self._template = compile_chat_template(self.chat_template)
        return render_chat_template(
            self._template, conversation, self.special_tokens, add_generation_prompt, **variables
        )
