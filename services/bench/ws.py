"""A small graphql-transport-ws client: connect, subscribe, read what arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import websockets
from websockets import ClientConnection, Subprotocol


class ProtocolError(RuntimeError):
    """The server answered outside the protocol (no connection_ack, say)."""


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        self._ids += 1
        op_id = str(self._ids)
        payload = {"query": query, "variables": variables}
        await self.ws.send(
            orjson.dumps({"id": op_id, "type": "subscribe", "payload": payload}).decode()
        )
        return op_id

    async def receive(self, seconds: float = 15) -> dict[str, Any]:
        """The next protocol message other than a ping (answered with a pong)."""
        while True:
            message: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), seconds))
            if message["type"] == "ping":
                await self.ws.send('{"type": "pong"}')
                continue
            return message


@asynccontextmanager
async def connect(base_url: str, token: str | None) -> AsyncIterator[Socket]:
    """An acknowledged graphql-transport-ws connection to the API's /graphql."""
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await ws.send(orjson.dumps({"type": "connection_init", "payload": payload}).decode())
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if ack.get("type") != "connection_ack":
            raise ProtocolError(f"expected connection_ack, got {ack.get('type')!r}")
        yield Socket(ws)
