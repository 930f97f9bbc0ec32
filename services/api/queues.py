"""A queue for what is held once per WebSocket: asyncio.Queue's put_nowait, get, get_nowait
and empty,
FIFO, optionally bounded, in a list and a future made only while someone waits (the
waiters' list too: a pumped subscription's queue never has one).

asyncio.Queue makes four deques of 64 slots each (about 2.3 KB) up front; a subscriber's
socket holds two queues (what arrives, and the board updates waiting to be pushed) for
its whole life, mostly empty.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class SmallQueue(Generic[T]):
    __slots__ = ("_items", "_maxsize", "_waiters")

    def __init__(self, maxsize: int = 0) -> None:
        self._items: list[T] = []
        self._maxsize = maxsize  # 0: unbounded
        self._waiters: list[asyncio.Future[None]] | None = None

    def put_nowait(self, item: T) -> None:
        """Add an item; asyncio.QueueFull (nothing added) when bounded and full."""
        if self._maxsize and len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        self._wake()

    async def get(self) -> T:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
                if self._items:  # a waiter woken but cancelled hands the wake-up on
                    self._wake()
        return self._items.pop(0)

    def get_nowait(self) -> T:
        """The next item; asyncio.QueueEmpty when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
                return
