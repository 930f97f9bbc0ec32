"""A small graphql-transport-ws client for tests: connect, subscribe, read what arrives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets import ClientConnection, Subprotocol


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        self._ids += 1
        op_id = str(self._ids)
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))
        return op_id

    async def receive(self, seconds: float = 15) -> dict[str, Any]:
        """The next protocol message other than a ping (answered with a pong)."""
        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), seconds))
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            return message


@asynccontextmanager
async def connect(base_url: str, token: str | None) -> AsyncIterator[Socket]:
    """An acknowledged graphql-transport-ws connection to the stack's /graphql."""
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        yield Socket(ws)
