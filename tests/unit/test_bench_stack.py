"""`carecoord bench`'s client of the running stack."""

from __future__ import annotations

import inspect

import uvicorn

from services.bench.stack import client_session


async def test_the_bench_client_lets_an_idle_connection_go_before_the_api_closes_it() -> None:
    # `carecoord api` keeps uvicorn's keep-alive; a request sent on a connection the server
    # is closing as idle fails with "Server disconnected".
    api_keep_alive = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default

    async with client_session("http://127.0.0.1:8000", "token") as client:
        assert client.connector is not None
        assert client.connector._keepalive_timeout < api_keep_alive
