"""Think-block stripping and incremental detokenisation, on the real Qwen tokenizer."""

from __future__ import annotations

import pytest

from engine.text.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer
from engine.text.think_filter import ThinkFilter, strip_think
from tests.support.tiny_qwen import build_qwen_tokenizer


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return build_qwen_tokenizer()


def feed(think: ThinkFilter, pieces: list[str]) -> list[str]:
    out = [think.push(p) for p in pieces]
    return [*out, think.flush()]


REPLY = "<think>\nThe user greets me. I should greet back.\n</think>\n\nHello! How can I help?"


def test_think_block_removed_whole() -> None:
    assert strip_think(REPLY) == "Hello! How can I help?"


@pytest.mark.parametrize("cut", range(1, len(REPLY)))
def test_think_block_removed_at_every_split_point(cut: int) -> None:
    shown = feed(ThinkFilter(), [REPLY[:cut], REPLY[cut:]])
    assert "".join(shown) == "Hello! How can I help?"
    assert not any("<" in piece or "think" in piece for piece in shown)


def test_the_whitespace_dropped_before_a_reply_is_kept_for_its_history() -> None:
    think = ThinkFilter()
    assert "".join(feed(think, [" ", "\n Hello", " there "])) == "Hello there "
    assert think.lead == " \n "
    after_thinking = ThinkFilter()
    assert "".join(feed(after_thinking, [REPLY])) == "Hello! How can I help?"
    assert after_thinking.lead == ""  # the template renders a thinking reply's history itself


def test_one_character_at_a_time_never_shows_half_a_tag() -> None:
    shown = feed(ThinkFilter(), list(REPLY))
    assert "".join(shown) == "Hello! How can I help?"
    assert all(piece in "Hello! How can I help?" for piece in shown)


def test_text_that_only_looks_like_a_tag_is_kept() -> None:
    assert (
        "".join(feed(ThinkFilter(), ["a <thi", "s> b <", "br> c <th"])) == "a <this> b <br> c <th"
    )


def test_unclosed_think_block_is_dropped() -> None:
    assert "".join(feed(ThinkFilter(), ["Sure. <think>secret plan", " more"])) == "Sure. "


def test_prompt_that_opened_the_block_starts_inside() -> None:
    assert "".join(feed(ThinkFilter(starts_inside=True), ["hidden</th", "ink>\n\nVisible"])) == (
        "Visible"
    )


def test_think_tokens_split_by_the_real_tokenizer(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer(REPLY, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    think = ThinkFilter()
    shown = [think.push(detok.push(i)) for i in ids]
    shown.append(think.push(detok.flush()) + think.flush())
    assert "".join(shown) == "Hello! How can I help?"
    assert all("think" not in piece for piece in shown)


@pytest.mark.parametrize(
    "text",
    [
        "Xin chào, bạn khỏe không? Tiếng Việt có dấu: ướt, giường, nghiêng, đẹp.",
        "Emoji 👩🏽‍💻 and flags 🇻🇳 in one line",
        "中文也可以。",
    ],
)
def test_detokenizer_never_splits_a_character(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.push(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)


def test_detokenizer_skips_special_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    detok = IncrementalDetokenizer(tokenizer)
    ids = tokenizer("Hi<|im_end|>", add_special_tokens=False)["input_ids"]
    assert "".join([detok.push(i) for i in ids] + [detok.flush()]) == "Hi"
