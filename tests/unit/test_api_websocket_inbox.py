"""The receive side of the API's WebSockets (services.api.websocket.Inbox): what uvicorn
asks of an asyncio.Queue, in order, waking its readers, never losing a wake-up."""

from __future__ import annotations

import asyncio

import pytest

from services.api.websocket import Inbox


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    inbox = Inbox()
    assert inbox.empty()
    for n in range(3):
        inbox.put_nowait(n)

    assert not inbox.empty()
    assert [await inbox.get() for _ in range(3)] == [0, 1, 2]
    assert inbox.empty()


async def test_a_reader_waiting_is_woken_by_the_next_message() -> None:
    inbox = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()

    inbox.put_nowait({"type": "websocket.receive", "text": "hi"})

    assert await reader == {"type": "websocket.receive", "text": "hi"}


async def test_a_reader_cancelled_once_woken_hands_the_message_to_the_next() -> None:
    inbox = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)

    inbox.put_nowait("only")
    first.cancel()

    assert await asyncio.wait_for(second, 5) == "only"
    with pytest.raises(asyncio.CancelledError):
        await first
