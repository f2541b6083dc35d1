"""Stop sequences found across any split of the streamed text, never shown in part."""

from __future__ import annotations

import pytest

from engine.text.stop_scanner import StopScanner

TEXT = "Answer: Paris.\nUser: and Rome?"


def _stream(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], StopScanner]:
    scanner = StopScanner(stops)
    shown = [scanner.push(piece) for piece in pieces]
    return [*shown, scanner.flush()], scanner


@pytest.mark.parametrize("cut", range(1, len(TEXT)))
def test_the_reply_ends_before_the_stop_however_it_is_split(cut: int) -> None:
    shown, scanner = _stream([TEXT[:cut], TEXT[cut:]], ("\nUser:",))
    assert "".join(shown) == "Answer: Paris." and scanner.stopped
    assert not any("\n" in piece for piece in shown)  # no piece of the stop is ever shown


def test_text_is_held_only_while_it_may_begin_a_stop() -> None:
    scanner = StopScanner(("</end>",))
    assert scanner.push("one </e") == "one "  # "</e" may begin the stop
    assert scanner.push("x two") == "</ex two"  # it did not
    assert scanner.push(" <") == " "
    assert scanner.flush() == "<" and not scanner.stopped


def test_the_earliest_of_several_stops_wins_and_nothing_follows() -> None:
    shown, _ = _stream(["a;b.c", "d"], (".", ";"))
    assert "".join(shown) == "a"


def test_no_stops_shows_everything_at_once() -> None:
    scanner = StopScanner(("",))
    assert scanner.push("all </") == "all </" and scanner.flush() == ""
