"""How the board projector takes its events off the stream: in batches of what arrived
while the batch before was handled, each acked only once the next is asked for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.worker import gathered


class Stream:
    """What gathered uses of a Faust agent's stream: noack(), events() and ack()."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | BaseException | None] = asyncio.Queue()
        self.taken = 0  # events handed out by events()
        self.acked: list[int] = []

    def noack(self) -> Stream:
        return self

    async def events(self) -> AsyncIterator[int]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            self.taken += 1
            yield item

    async def ack(self, event: int) -> bool:
        self.acked.append(event)
        return True

    def arrive(self, *events: int | BaseException | None) -> None:
        for event in events:
            self.queue.put_nowait(event)


async def settle() -> None:
    """Let every task that can run, run (the reader taking what has arrived)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_what_arrives_while_a_batch_is_handled_is_the_next_batch() -> None:
    stream = Stream()
    stream.arrive(1)
    batches = gathered(stream, 500)
    # A lone event goes at once: nothing waits for company.
    assert await anext(batches) == [1]
    # Handling it, the stream keeps being read: these are waiting as one batch.
    stream.arrive(2, 3, 4)
    await settle()
    assert await anext(batches) == [2, 3, 4]
    stream.arrive(None)
    assert [b async for b in batches] == []


async def test_a_backlog_goes_in_full_batches() -> None:
    stream = Stream()
    stream.arrive(*range(7), None)
    assert [b async for b in gathered(stream, 3)] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_batch_is_acked_once_the_next_is_asked_for() -> None:
    stream = Stream()
    stream.arrive(1, 2)
    batches = gathered(stream, 500)
    assert await anext(batches) == [1, 2]
    assert stream.acked == []  # being handled: a crash now leaves it to be read again
    stream.arrive(3)
    await settle()
    assert await anext(batches) == [3]
    assert stream.acked == [1, 2]
    await batches.aclose()  # the caller failed with [3]: never acked
    assert stream.acked == [1, 2]


async def test_the_stream_waits_while_a_full_batch_is_waiting() -> None:
    stream = Stream()
    stream.arrive(*range(10))
    batches = gathered(stream, 3)
    assert await anext(batches) == [0, 1, 2]
    await settle()
    assert stream.taken == 6  # three handed out, three waiting; the rest left in the stream
    assert await anext(batches) == [3, 4, 5]
    await settle()
    assert stream.taken == 9
    await batches.aclose()


async def test_what_arrived_before_the_stream_failed_is_handed_out_then_the_failure() -> None:
    stream = Stream()
    stream.arrive(1, 2, RuntimeError("broker gone"))
    batches = gathered(stream, 500)
    assert await anext(batches) == [1, 2]
    with pytest.raises(RuntimeError, match="broker gone"):
        await anext(batches)


async def test_closed_it_stops_reading_the_stream() -> None:
    stream = Stream()
    stream.arrive(1)
    batches = gathered(stream, 500)
    assert await anext(batches) == [1]
    await batches.aclose()  # the agent stopped
    stream.arrive(2, 3)
    await settle()
    assert stream.taken == 1
