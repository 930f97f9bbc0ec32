"""The per-actor read rate (a token bucket per actor), with a clock the test moves."""

from __future__ import annotations

from services.api.graphql import read_rate
from services.api.graphql.read_rate import ReadRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_actor_reads_a_burst_then_at_the_rate_and_others_are_not_slowed() -> None:
    clock = Clock()
    rate = ReadRate(per_second=2.0, burst=3, clock=clock)

    assert [rate.take("u-1") for _ in range(3)] == [None, None, None]
    refused = rate.take("u-1")
    assert refused is not None and refused.retry_after == 1
    assert rate.take("u-2") is None  # another actor has their own bucket
    clock.now += 0.5  # one token back at 2 per second
    assert rate.take("u-1") is None
    assert rate.take("u-1") is not None


def test_only_the_first_refusal_of_an_actor_in_a_window_is_to_be_recorded() -> None:
    clock = Clock()
    rate = ReadRate(per_second=0.001, burst=1, clock=clock)
    rate.take("u-1")

    first = [rate.take("u-1") for _ in range(50)]
    clock.now += read_rate.AUDIT_WINDOW_SECONDS
    later = rate.take("u-1")

    assert [r.record for r in first if r is not None] == [True] + [False] * 49
    assert later is not None and later.record
