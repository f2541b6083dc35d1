"""Render a conversation with the model's own chat template and find its stop tokens."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from engine.events import ChatTurn
from engine.text.think_filter import OPEN_TAG

if TYPE_CHECKING:
    from engine.text.tokenizing import TextTokenizer

log = logging.getLogger(__name__)

# End-of-turn markers of common chat formats, used when present in the vocabulary.
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")

# Qwen3's answer header when thinking is off: the template opens and closes an empty think
# block for the model, then drops that block from earlier answers in the history.
_ANSWER_HEADER = "<|im_start|>assistant\n"
_EMPTY_THINK = "<think>\n\n</think>\n\n"

# Used only when a model ships no chat template (base models): plain role-prefixed lines.
_PLAIN_FORMAT = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_chat(
    tokenizer: TextTokenizer, messages: Sequence[ChatTurn], enable_thinking: bool
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
        return answers_as_generated(str(text))
    lines = [f"{_PLAIN_FORMAT[turn.role]}: {turn.content}" for turn in messages]
    return "\n".join([*lines, "Assistant:"])


def answers_as_generated(text: str) -> str:
    """Give earlier answers back the empty think block they were generated after.

    With thinking off, Qwen3's template puts an empty think block before the answer it asks
    for but leaves it out of earlier answers, so a chat's next prompt differs from what the
    model saw exactly where its last answer starts, and the state kept from the last turn
    could not cover the answer (128 tokens read again every turn). Written back as
    generated, the history is what the model already read; only the new message is new.
    Prompts of other templates are returned unchanged.
    """
    generation = _ANSWER_HEADER + _EMPTY_THINK
    if not text.endswith(generation):
        return text
    history = text[: -len(generation)]
    parts = history.split(_ANSWER_HEADER)
    restored = [parts[0]] + [
        part if part.startswith("<think>") else _EMPTY_THINK + part for part in parts[1:]
    ]
    return _ANSWER_HEADER.join(restored) + generation


def prompt_opens_think(prompt_text: str) -> bool:
    """True when the template already opened a think block for the model (thinking models)."""
    return prompt_text.rstrip().endswith(OPEN_TAG)


def template_version(tokenizer: TextTokenizer) -> str:
    """A short digest of the chat template: a new template must not reuse cached replies."""
    template = getattr(tokenizer, "chat_template", None) or "plain"
    return hashlib.sha256(str(template).encode("utf-8")).hexdigest()[:16]


def stop_token_ids(tokenizer: TextTokenizer, generation_end_ids: Iterable[int]) -> frozenset[int]:
    """The model's end-of-turn tokens: its generation config's, the tokenizer's eos and the
    known markers in its vocabulary."""
    ids = set(generation_end_ids)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in _END_OF_TURN:  # looked up one by one: get_vocab() builds 151k entries (0.1 s)
        index = tokenizer.convert_tokens_to_ids(token)
        # A token not in the vocabulary maps to the unknown token's id, or to None.
        if isinstance(index, int) and tokenizer.convert_ids_to_tokens(index) == token:
            ids.add(index)
    if not ids:
        log.warning("the model declares no end-of-turn token; replies stop at max_new_tokens")
    return frozenset(ids)


def encode_prompt(tokenizer: TextTokenizer, prompt_text: str) -> list[int]:
    """Token ids of a rendered prompt (a chat template already holds any BOS token)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    ids: list[int] = tokenizer(prompt_text, add_special_tokens=not templated)["input_ids"]
    return ids
