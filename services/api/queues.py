"""What is held once per WebSocket, made small: a queue (asyncio.Queue's put_nowait, get,
get_nowait and empty; FIFO, optionally bounded, in a list) and a flag (asyncio.Event's),
each making a future, and the list of them, only while someone waits.

asyncio.Queue makes four deques of 64 slots each (about 2.3 KB) up front, and an
asyncio.Event a deque; a subscriber's socket holds two queues (what arrives, and the
board updates waiting to be pushed) and a flag (whether it may write) for its whole
life, mostly empty and never waited on.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class _Waiters:
    """Futures made only while someone waits, and the list of them only then too."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        """Wake one waiter."""
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)


class SmallQueue(_Waiters, Generic[T]):
    __slots__ = ("_items", "_maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__()
        self._items: list[T] = []
        self._maxsize = maxsize  # 0: unbounded

    def put_nowait(self, item: T) -> None:
        """Add an item; asyncio.QueueFull (nothing added) when bounded and full."""
        if self._maxsize and len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        self._wake()

    async def get(self) -> T:
        while not self._items:
            try:
                await self._wait()
            finally:
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


class SmallFlag(_Waiters):
    """asyncio.Event's is_set/set/clear/wait, set to begin with (a socket's `writable`)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        super().__init__()
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        self._wake_all()

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if not self._set:
            await self._wait()
        return True
