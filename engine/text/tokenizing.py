"""The tokenizer type the engine works with: transformers' own, or a plain one read without it.

Both answer the calls the engine makes (tokenizer(text), decode, apply_chat_template with
tokenize=False, convert_tokens_to_ids, eos_token_id, chat_template) with the same results.
Only a name for the type checker: importing transformers at run time is what the plain
tokenizer exists to avoid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from engine.text.plain_tokenizer import PlainTokenizer

    TextTokenizer: TypeAlias = PreTrainedTokenizerBase | PlainTokenizer
