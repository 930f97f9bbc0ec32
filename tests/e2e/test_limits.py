"""The request limits and production surface on `carecoord up`'s real uvicorn: a WebSocket
message past the body limit closes the socket, and the development stack serves GraphiQL
under its own policy while JSON answers carry the API's security headers."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import websockets
from websockets import Subprotocol

from services.settings import Settings
from tests.e2e.conftest import Stack


async def test_a_websocket_message_past_the_body_limit_closes_the_socket(stack: Stack) -> None:
    url = stack.base_url.replace("http://", "ws://") + "/graphql"
    oversized = {"type": "connection_init", "payload": {"x": "y" * Settings().max_body_bytes}}

    async with websockets.connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
    ) as ws:
        await ws.send(orjson.dumps(oversized).decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_the_development_stack_serves_graphiql_and_headers_on_every_answer(
    client: httpx.Client,
) -> None:
    page = client.get("/graphql", headers={"Accept": "text/html"})
    answer = client.post("/graphql", json={"query": "{ __typename }"})

    assert page.status_code == 200
    assert "script-src 'self' 'sha256-" in page.headers["content-security-policy"]
    assert answer.json() == {"data": {"__typename": "Query"}}
    for response in (page, answer):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
