"""The API's WebSocket protocol on a real uvicorn server: a socket answers as before, the app
still reads the upgrade request's headers, the handshake is not held once answered, and
what arrives goes through the smaller queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from services.api.queues import SmallQueue
from services.api.websocket import WebSocketProtocol
from services.common import embedded


async def _echo(socket: WebSocket) -> None:
    await socket.accept()
    while True:
        text = await socket.receive_text()
        await socket.send_text(f"{socket.headers.get('x-probe')}:{text}")


@contextlib.asynccontextmanager
async def _serving() -> AsyncIterator[tuple[uvicorn.Server, int]]:
    port = embedded.free_port()
    app = Starlette(routes=[WebSocketRoute("/ws", _echo)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ws=WebSocketProtocol, lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):  # started within 10 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        await task


async def test_a_socket_answers_and_its_handshake_is_let_go_once_accepted() -> None:
    async with _serving() as (server, port):
        url = f"ws://127.0.0.1:{port}/ws"
        async with websockets.connect(url, additional_headers={"X-Probe": "p-1"}) as ws:
            await ws.send("hello")
            assert await ws.recv() == "p-1:hello"

            (protocol,) = server.server_state.connections
            assert isinstance(protocol, WebSocketProtocol)
            assert "request" not in vars(protocol)
            assert "response" not in vars(protocol)
            assert isinstance(protocol.queue, SmallQueue)

            await ws.send("again")
            assert await ws.recv() == "p-1:again"
