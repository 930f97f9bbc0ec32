"""The API's WebSocket protocol: uvicorn's (websockets' sans-I/O implementation), lighter by
what every held socket would otherwise keep for its life.

- uvicorn keeps the upgrade request and its response (their header lists) on the
  protocol, and websockets' parser keeps the request in its frame, though neither is read
  again once the socket is accepted: about 4 KB. What the app reads of the request
  (headers, client address, path) is in the ASGI scope, built from it beforehand.
- Its receive side is an asyncio.Queue: four deques of 64 slots each (about 2.3 KB) for
  what is, on a subscriber's socket, one message now and then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class Inbox:
    """What uvicorn asks of its receive queue (put_nowait, get, empty), unbounded as
    asyncio.Queue() is, in a list and a future made only while someone waits."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake()

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
                if self._items:  # a waiter woken but cancelled hands the wake-up on
                    self._wake()
        return self._items.pop(0)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    def empty(self) -> bool:
        return not self._items


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]  # the three methods uvicorn uses

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)  # answered, and the ASGI scope built from it
        event.headers.clear()  # the parser's frame holds the request for the socket's life

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.__dict__.pop("request", None)
            self.__dict__.pop("response", None)

    @property
    def holds_handshake(self) -> bool:
        """True while the upgrade request or its response is still held."""
        return "request" in self.__dict__ or "response" in self.__dict__
