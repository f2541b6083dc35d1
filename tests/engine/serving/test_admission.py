"""Admission by time: the expected wait replays the batch with the measured speeds."""

from __future__ import annotations

from typing import cast

import pytest

from engine.loading.decode_loop import SamplingParams
from engine.serving.admission import Rates, expected_waits
from engine.serving.reply_output import Job, ReplyOutput
from engine.serving.sequence import Phase, Sequence


def sequence(prompt: int, generated: int = 0, limit: int = 100) -> Sequence:
    job = Job(list(range(prompt)), SamplingParams(max_new_tokens=limit), False, lambda _: None)
    made = Sequence(job, cast(ReplyOutput, None))
    made.generated = list(range(generated))
    if generated:
        made.phase, made.computed = Phase.DECODE, prompt
    return made


def rates(step_s: float, prefill_tps: float, reply_tokens: float) -> Rates:
    measured = Rates(max_new_tokens=100)
    measured.step_s, measured.prefill_tps, measured.reply_tokens = step_s, prefill_tps, reply_tokens
    return measured


def test_each_waiting_request_takes_the_place_that_frees_first() -> None:
    speeds = rates(step_s=0.1, prefill_tps=100.0, reply_tokens=50)
    running = [sequence(10, generated=30), sequence(10, generated=10)]  # 2 s and 4 s left
    waiting = [sequence(100), sequence(100), sequence(100)]  # 1 s reading + 5 s writing each
    waits = expected_waits(running, waiting, places=2, rates=speeds)
    assert [round(waits[s], 6) for s in waiting] == [2.0, 4.0, 8.0]


def test_free_places_mean_no_wait_and_a_long_reply_is_expected_to_end_soon() -> None:
    speeds = rates(step_s=0.1, prefill_tps=100.0, reply_tokens=50)
    overdue = sequence(10, generated=90)  # past the usual length: 16 more tokens expected
    assert speeds.remaining_s(overdue) == pytest.approx(1.0)  # ...or its 10 left, at most
    waiting = [sequence(10)]
    assert expected_waits([overdue], waiting, places=2, rates=speeds) == {waiting[0]: 0.0}


def test_measurements_move_the_estimates() -> None:
    speeds = Rates(max_new_tokens=200)
    assert speeds.reply_tokens == 100
    for _ in range(50):
        speeds.record_step(0.02)
        speeds.record_prefill(1000, 1.0)
        speeds.record_reply(30)
    assert speeds.step_s == pytest.approx(0.02, rel=1e-3)
    assert speeds.prefill_tps == pytest.approx(1000, rel=1e-3)
    assert speeds.reply_tokens == pytest.approx(30, rel=1e-3)
