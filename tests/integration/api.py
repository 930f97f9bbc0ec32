"""The API app in-process on the test database, signed in with tokens of a test secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import uvicorn
from pydantic import SecretStr

from services.api.app import create_app
from services.audit.sink import KafkaAuditSink
from services.common import embedded
from services.common.auth import mint_token
from services.settings import Settings

SECRET = "integration-test-secret-of-enough-length"


def token(sub: str, name: str = "Dr Example", secret: str = SECRET) -> str:
    return mint_token(secret=secret, sub=sub, name=name)


@asynccontextmanager
async def in_process_api(
    pool: asyncpg.Pool[Any], settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app; access records go to care.audit on the test broker, as in
    production."""

    async def kafka_ok() -> None:
        return None

    settings = settings.model_copy(update={"jwt_secret": SecretStr(SECRET)})
    audit = KafkaAuditSink(settings)
    app = create_app(settings, pool=pool, kafka_ping=kafka_ok, live_updates=False, audit=audit)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await audit.close()


@asynccontextmanager
async def served(app: Any, **config: Any) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """The ASGI app on a real uvicorn server on a free local port (and its options)."""
    port = embedded.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, **config)
    )
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
