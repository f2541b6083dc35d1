"""A model's end-of-turn tokens, found without listing its whole vocabulary."""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from engine.text.prompt import stop_token_ids
from tests.support.tiny_qwen import build_qwen_tokenizer


def test_qwen_stops_at_its_end_of_turn_and_end_of_text() -> None:
    tokenizer = build_qwen_tokenizer()
    im_end, end_of_text = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert stop_token_ids(tokenizer, ()) == {im_end, end_of_text}


def test_markers_missing_from_the_vocabulary_are_not_taken_for_the_unknown_token() -> None:
    vocabulary = {"<unk>": 0, "</s>": 1, "hello": 2, "<|eot_id|>": 3}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocabulary, unk_token="<unk>")),
        unk_token="<unk>",
        eos_token="</s>",
    )
    assert stop_token_ids(tokenizer, ()) == {1, 3}
    # The generation config's own end tokens count too.
    assert stop_token_ids(tokenizer, (2, 1)) == {1, 2, 3}
