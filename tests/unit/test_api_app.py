"""The API app over ASGI, with a stand-in pool and broker: health, auth, GraphiQL, metrics, ids."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from services.api.app import create_app
from services.common.auth import mint_token
from services.common.db import DatabaseUnavailable
from services.common.log import configure_logging
from services.settings import Settings

SECRET = "api-unit-test-secret-long-enough-for-hs256"
# Who the caller is, from the token alone (their teams are read from the database).
ME = "query Me { me { userId name } }"


class FakePool:
    """Stands in for the asyncpg pool; the injected db_check decides whether it is up."""


class Health:
    def __init__(self) -> None:
        self.db_error: Exception | None = None
        self.kafka_error: Exception | None = None

    async def db_check(self, pool: Any) -> None:
        assert isinstance(pool, FakePool)
        if self.db_error:
            raise self.db_error

    async def kafka_ping(self) -> None:
        if self.kafka_error:
            raise self.kafka_error


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def settings() -> Settings:
    return Settings(jwt_secret=SecretStr(SECRET))


@pytest.fixture
async def client(settings: Settings, health: Health) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings,
        pool=FakePool(),
        kafka_ping=health.kafka_ping,
        db_check=health.db_check,  # type: ignore[arg-type]
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


def _bearer(sub: str = "u-42", name: str = "Dr Who", secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret=secret, sub=sub, name=name)}"}


async def test_healthz_is_ok_when_postgres_and_kafka_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgres": "ok", "kafka": "ok"}


async def test_healthz_is_503_naming_kafka_when_the_broker_ping_fails(
    client: httpx.AsyncClient, health: Health
) -> None:
    health.kafka_error = ConnectionError("no broker at localhost:9092")

    response = await client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["postgres"] == "ok"
    assert body["kafka"].startswith("unreachable:")
    assert "no broker" in body["kafka"]


async def test_healthz_is_503_naming_postgres_when_the_db_check_fails(
    client: httpx.AsyncClient, health: Health
) -> None:
    health.db_error = DatabaseUnavailable("connection refused")

    response = await client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["kafka"] == "ok"
    assert body["postgres"].startswith("unreachable:")
    assert "connection refused" in body["postgres"]


async def test_me_returns_the_callers_id_and_name_from_the_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": ME}, headers=_bearer())

    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"userId": "u-42", "name": "Dr Who"}}}


async def test_me_without_a_token_is_unauthenticated(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": ME})

    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "not signed in" in error["message"]


async def test_me_with_a_wrongly_signed_token_is_unauthenticated_saying_why(
    client: httpx.AsyncClient,
) -> None:
    headers = _bearer(secret="a-different-secret-that-is-long-enough-too")

    response = await client.post("/graphql", json={"query": ME}, headers=headers)

    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "signature" in error["message"]
    assert headers["Authorization"].split()[1] not in error["message"]


async def test_without_a_configured_secret_every_token_is_refused(health: Health) -> None:
    app = create_app(Settings(jwt_secret=None), pool=FakePool(), kafka_ping=health.kafka_ping)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/graphql", json={"query": ME}, headers=_bearer())

    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "CARECOORD_JWT_SECRET" in error["message"]


async def test_a_browser_get_on_graphql_serves_graphiql_where_the_setting_turns_it_on(
    health: Health,
) -> None:
    settings = Settings(jwt_secret=SecretStr(SECRET), graphiql=True)
    app = create_app(settings, pool=FakePool(), kafka_ping=health.kafka_ping)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_metrics_expose_request_and_operation_counters(client: httpx.AsyncClient) -> None:
    await client.post("/graphql", json={"query": ME}, headers=_bearer())

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "carecoord_http_requests_total" in text
    assert "carecoord_http_request_duration_seconds_bucket" in text
    assert 'carecoord_graphql_operations_total{name="Me",outcome="ok",type="query"} 1.0' in text
    assert 'route="/graphql"' in text


async def test_an_incoming_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "req-123.abc"})

    assert response.headers["x-request-id"] == "req-123.abc"


async def test_an_unusable_request_id_is_replaced_by_a_fresh_one(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "x" * 200})

    echoed = response.headers["x-request-id"]
    assert echoed != "x" * 200
    assert len(echoed) == 36


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_the_access_line_has_ids_and_the_user_but_no_query_or_variables(
    client: httpx.AsyncClient, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Configured here, not in a fixture: the handler must hold the stream capsys reads now.
    configure_logging("info", "json")
    body = {"query": ME, "variables": {"mrn": "MRN-SECRET-1"}}

    await client.post("/graphql", json=body, headers={**_bearer(), "X-Request-Id": "rid-1"})

    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "request"]
    assert len(access) == 1
    assert access[0]["request_id"] == "rid-1"
    assert access[0]["correlation_id"] == "rid-1"
    assert access[0]["user_id"] == "u-42"
    assert access[0]["path"] == "/graphql"
    assert access[0]["status"] == 200
    assert "MRN-SECRET-1" not in err
    assert "Dr Who" not in err


class WebSocketSession:
    """Drives an ASGI app over one graphql-transport-ws socket, without a server."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.inbox.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def receive_json(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.outbox.get(), timeout=5)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])  # type: ignore[no-any-return]

    async def receive_close(self, wait: float = 5) -> dict[str, Any]:
        message = await asyncio.wait_for(self.outbox.get(), timeout=wait)
        assert message["type"] == "websocket.close", message
        return message


@asynccontextmanager
async def websocket(app: Any) -> AsyncIterator[WebSocketSession]:
    session = WebSocketSession()
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"sec-websocket-protocol", b"graphql-transport-ws")],
        "subprotocols": ["graphql-transport-ws"],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await session.inbox.put({"type": "websocket.connect"})
    task = asyncio.create_task(app(scope, session.inbox.get, session.outbox.put))
    accepted = await asyncio.wait_for(session.outbox.get(), timeout=5)
    assert accepted["type"] == "websocket.accept"
    assert accepted["subprotocol"] == "graphql-transport-ws"
    try:
        yield session
    finally:
        await session.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, timeout=5)


async def test_a_websocket_authenticates_from_the_connection_init_payload(
    settings: Settings, health: Health
) -> None:
    app = create_app(settings, pool=FakePool(), kafka_ping=health.kafka_ping)  # type: ignore[arg-type]
    async with websocket(app) as ws:
        await ws.send_json({"type": "connection_init", "payload": _bearer()})
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": ME}})
        message = await ws.receive_json()

    assert message["type"] == "next"
    assert message["payload"]["data"]["me"]["userId"] == "u-42"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {mint_token(secret='x' * 40, sub='u-1', name='Dr X')}"},
        {"Authorization": 42},
    ],
    ids=["no token", "malformed token", "forged token", "not a string"],
)
async def test_a_websocket_without_a_valid_token_is_refused_at_connection_init_with_4403(
    settings: Settings, health: Health, payload: dict[str, Any]
) -> None:
    app = create_app(settings, pool=FakePool(), kafka_ping=health.kafka_ping)  # type: ignore[arg-type]
    async with websocket(app) as ws:
        await ws.send_json({"type": "connection_init", "payload": payload})
        closed = await ws.receive_close()

    assert closed["code"] == 4403


async def test_a_websocket_is_closed_with_4401_when_its_token_expires(
    settings: Settings, health: Health
) -> None:
    app = create_app(settings, pool=FakePool(), kafka_ping=health.kafka_ping)  # type: ignore[arg-type]
    token = mint_token(secret=SECRET, sub="u-42", name="Dr Who", ttl_seconds=2)
    async with websocket(app) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": ME}})
        assert (await ws.receive_json())["payload"]["data"]["me"]["userId"] == "u-42"
        assert (await ws.receive_json())["type"] == "complete"

        closed = await ws.receive_close(wait=10)

    assert closed["code"] == 4401
    assert "expired" in closed["reason"]


async def test_an_operation_on_a_websocket_whose_token_expired_is_unauthenticated(
    settings: Settings, health: Health, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.api.graphql import live

    # The socket's own close is held off, so the operation meets the expired token first.
    monkeypatch.setattr(live, "close_at_expiry", lambda ctx: None)
    app = create_app(settings, pool=FakePool(), kafka_ping=health.kafka_ping)  # type: ignore[arg-type]
    token = mint_token(secret=SECRET, sub="u-42", name="Dr Who", ttl_seconds=1)
    async with websocket(app) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        await asyncio.sleep(2.5)
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": ME}})
        message = await ws.receive_json()

    assert message["type"] == "next"
    error = message["payload"]["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "expired" in error["message"]


def _first_error(response: httpx.Response) -> dict[str, Any]:
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors[0]


@pytest.mark.parametrize("header", ["X-Purpose-Of-Use", "X-Break-Glass"])
async def test_an_access_header_sent_twice_is_refused_as_bad_user_input(
    client: httpx.AsyncClient, header: str
) -> None:
    headers = [*_bearer().items(), (header, "TREATMENT"), (header, "RESEARCH")]

    response = await client.post("/graphql", json={"query": ME}, headers=headers)

    error = _first_error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert header in error["message"] and "once" in error["message"]
    assert response.json()["data"] is None


async def test_two_authorization_headers_are_refused_as_unauthenticated(
    client: httpx.AsyncClient,
) -> None:
    headers = [*_bearer().items(), *_bearer(sub="u-other").items()]

    response = await client.post("/graphql", json={"query": ME}, headers=headers)

    error = _first_error(response)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "more than one Authorization header" in error["message"]


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("unconscious \u202eevil".encode(), "bidirectional"),
        ("unconscious \u200b".encode(), "zero-width"),
        (b"unconscious \x1b[31m", "control character"),
        (b"x" * 501, "at most 500 characters"),
    ],
    ids=["bidi", "zero-width", "ansi", "too long"],
)
async def test_a_break_glass_reason_that_is_not_clean_bounded_text_is_refused(
    client: httpx.AsyncClient, reason: bytes, says: str
) -> None:
    headers = [*_bearer().items(), ("X-Break-Glass", reason)]

    response = await client.post("/graphql", json={"query": ME}, headers=headers)

    error = _first_error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert says in error["message"]
    assert "unconscious" not in error["message"]


@pytest.mark.parametrize(
    "reason", ["Bewusstlos, Angehörige nicht erreichbar".encode(), "Angehörige".encode("latin-1")]
)
async def test_a_break_glass_reason_in_utf8_or_latin1_is_accepted(
    client: httpx.AsyncClient, reason: bytes
) -> None:
    headers = [*_bearer().items(), ("X-Break-Glass", reason)]

    response = await client.post("/graphql", json={"query": ME}, headers=headers)

    assert response.json()["data"]["me"]["userId"] == "u-42"
