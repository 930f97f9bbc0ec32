"""The API's WebSocket protocol: uvicorn's (websockets' sans-I/O implementation), letting go
of the handshake once it is answered.

uvicorn keeps the upgrade request and its response (their header lists) on the protocol
for the socket's life, though neither is read again once the socket is accepted: about
4 KB a socket, held by every subscriber. What the app reads of the request (its headers,
client address, path) is in the ASGI scope, which stays.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.__dict__.pop("request", None)
            self.__dict__.pop("response", None)

    @property
    def holds_handshake(self) -> bool:
        """True while the upgrade request or its response is still held."""
        return "request" in self.__dict__ or "response" in self.__dict__
