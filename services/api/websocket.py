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

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from services.api.queues import SmallQueue


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = SmallQueue()  # type: ignore[assignment]  # the methods uvicorn uses

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
