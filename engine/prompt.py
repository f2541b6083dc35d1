"""Render a conversation with the model's own chat template and find its stop tokens."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from transformers import GenerationConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from engine.events import ChatTurn
from engine.think_filter import OPEN_TAG

log = logging.getLogger(__name__)

# End-of-turn markers of common chat formats, used when present in the vocabulary.
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

# Used only when a model ships no chat template (base models): plain role-prefixed lines.
_PLAIN_FORMAT = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[ChatTurn], enable_thinking: bool
) -> str:
    """The prompt text for the next assistant turn."""
    conversation = [{"role": turn.role, "content": turn.content} for turn in messages]
    if getattr(tokenizer, "chat_template", None):
        # Templates that do not know enable_thinking simply ignore the extra variable.
        text = tokenizer.apply_chat_template(
            conversation,
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=enable_thinking,
        )
        return str(text)
    lines = [f"{_PLAIN_FORMAT[turn.role]}: {turn.content}" for turn in messages]
    return "\n".join([*lines, "Assistant:"])


def prompt_opens_think(prompt_text: str) -> bool:
    """True when the template already opened a think block for the model (thinking models)."""
    return prompt_text.rstrip().endswith(OPEN_TAG)


def template_version(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short digest of the chat template: a new template must not reuse cached replies."""
    template = getattr(tokenizer, "chat_template", None) or "plain"
    return hashlib.sha256(str(template).encode("utf-8")).hexdigest()[:16]


def stop_token_ids(
    tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None
) -> frozenset[int]:
    """The model's end-of-turn tokens: generation config, tokenizer eos, known markers."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list | tuple):
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _END_OF_TURN if token in vocab)
    if not ids:
        log.warning("the model declares no end-of-turn token; replies stop at max_new_tokens")
    return frozenset(ids)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt_text: str) -> list[int]:
    """Token ids of a rendered prompt (a chat template already holds any BOS token)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    ids: list[int] = tokenizer(prompt_text, add_special_tokens=not templated)["input_ids"]
    return ids
