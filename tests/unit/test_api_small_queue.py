"""The queue each WebSocket holds (services.api.queues.SmallQueue): what uvicorn and the
hub ask of an asyncio.Queue, in order, bounded when asked, waking its readers, never
losing a wake-up; and its flag (SmallFlag), what uvicorn asks of an asyncio.Event."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.api.queues import SmallFlag, SmallQueue


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    inbox = SmallQueue[Any]()
    assert inbox.empty()
    for n in range(3):
        inbox.put_nowait(n)

    assert not inbox.empty()
    assert [await inbox.get() for _ in range(3)] == [0, 1, 2]
    assert inbox.empty()


async def test_a_reader_waiting_is_woken_by_the_next_message() -> None:
    inbox = SmallQueue[Any]()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()

    inbox.put_nowait({"type": "websocket.receive", "text": "hi"})

    assert await reader == {"type": "websocket.receive", "text": "hi"}


async def test_a_reader_cancelled_once_woken_hands_the_message_to_the_next() -> None:
    inbox = SmallQueue[Any]()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)

    inbox.put_nowait("only")
    first.cancel()

    assert await asyncio.wait_for(second, 5) == "only"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_bounded_queue_refuses_past_its_bound_and_keeps_what_it_holds() -> None:
    queue = SmallQueue[int](maxsize=2)
    queue.put_nowait(1)
    queue.put_nowait(2)

    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(3)
    assert queue.qsize() == 2
    assert [await queue.get(), await queue.get()] == [1, 2]


async def test_a_flag_starts_set_and_wakes_every_waiter_when_set_again() -> None:
    writable = SmallFlag()
    assert writable.is_set()
    assert await asyncio.wait_for(writable.wait(), 1)

    writable.clear()
    waiters = [asyncio.create_task(writable.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not writable.is_set()
    assert not any(w.done() for w in waiters)

    writable.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]


async def test_a_cancelled_flag_waiter_is_forgotten() -> None:
    writable = SmallFlag()
    writable.clear()
    waiter = asyncio.create_task(writable.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    later = asyncio.create_task(writable.wait())
    await asyncio.sleep(0)
    writable.set()
    assert await asyncio.wait_for(later, 1)
