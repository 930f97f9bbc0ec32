"""The queue each WebSocket holds (services.api.queues.SmallQueue): what uvicorn and the
hub ask of an asyncio.Queue, in order, bounded when asked, waking its readers, never
losing a wake-up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.api.queues import SmallQueue


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
