"""The API's WebSocket protocol on a real uvicorn server: a socket answers as before, the app
still reads the upgrade request's headers, the handshake is not held once answered, and
what arrives goes through the smaller queue; a parked socket outlives the app's call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from services.api.queues import SmallQueue
from services.api.websocket import PARK, WebSocketProtocol
from tests.integration.api import served


async def _echo(socket: WebSocket) -> None:
    await socket.accept()
    while True:
        text = await socket.receive_text()
        await socket.send_text(f"{socket.headers.get('x-probe')}:{text}")


def _serving(
    endpoint: Callable[[WebSocket], Awaitable[None]] = _echo,
) -> contextlib.AbstractAsyncContextManager[tuple[uvicorn.Server, int]]:
    return served(Starlette(routes=[WebSocketRoute("/ws", endpoint)]), ws=WebSocketProtocol)


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


class _Parked:
    """An endpoint that accepts, parks the socket with a feed that echoes each message (and
    holds, pausing reading, after "hold"), and returns."""

    def __init__(self) -> None:
        self.heard: list[dict[str, object]] = []
        self.replies: set[asyncio.Future[None]] = set()
        self.resume: Callable[[], None] | None = None

    async def endpoint(self, socket: WebSocket) -> None:
        await socket.accept()

        def feed(message: dict[str, object]) -> bool:
            self.heard.append(message)
            if message["type"] == "websocket.receive":
                self.replies.add(
                    asyncio.ensure_future(socket.send_text(f"parked:{message['text']}"))
                )
            return message.get("text") != "hold"

        self.resume = socket.scope["extensions"][PARK](feed)


async def test_a_parked_socket_stays_open_after_the_app_returns_and_feeds_what_arrives() -> None:
    parked = _Parked()
    async with _serving(parked.endpoint) as (server, port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("one")
            assert await ws.recv() == "parked:one"
            assert not server.server_state.tasks  # the app has returned: no task holds it
            (protocol,) = server.server_state.connections
            assert isinstance(protocol, WebSocketProtocol) and protocol.parked

            await ws.send("hold")  # the feed holds enough: reading pauses
            assert await ws.recv() == "parked:hold"
            assert protocol.read_paused
            await ws.send("two")
            await asyncio.sleep(0.2)
            assert [m.get("text") for m in parked.heard] == ["one", "hold"]
            assert parked.resume is not None
            parked.resume()
            assert await ws.recv() == "parked:two"

        for _ in range(100):
            if parked.heard[-1]["type"] == "websocket.disconnect":
                break
            await asyncio.sleep(0.02)
        assert parked.heard[-1]["type"] == "websocket.disconnect"
