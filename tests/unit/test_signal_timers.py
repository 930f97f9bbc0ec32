"""The signal timers' per-item guard: one bad item holds up no other, an outage ends the tick."""

from __future__ import annotations

import asyncpg
import pytest

from services.tasks.signal_agents import _one


async def test_a_timer_action_that_fails_on_its_own_counts_zero_and_the_next_one_runs() -> None:
    async def bad() -> None:
        raise ValueError("a reading of 312 mg/dL")  # its text is never logged

    async def good() -> None:
        return None

    done = [await _one("silence", "m-1", bad()), await _one("silence", "m-2", good())]
    assert done == [0, 1]


async def test_an_outage_ends_the_tick_instead_of_being_counted_as_one_items_failure() -> None:
    async def away() -> None:
        raise asyncpg.CannotConnectNowError("the database is starting up")

    with pytest.raises(asyncpg.CannotConnectNowError):
        await _one("escalation", "k-1", away())
