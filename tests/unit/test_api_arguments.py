"""The API refuses a hidden character in any argument or variable before a resolver runs
(services.api.graphql.arguments): over HTTP and on a WebSocket subscription alike, with
no database behind the app, so nothing could have been looked up."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import graphql
import httpx
import pytest
from pydantic import SecretStr

from services.api.app import create_app
from services.api.graphql import arguments
from services.common.auth import mint_token
from services.settings import Settings
from tests.unit.test_api_app import FakePool, websocket

SECRET = "api-unit-test-secret-long-enough-for-hs256"
TOKEN = mint_token(secret=SECRET, sub="u-42", name="Dr Who")


async def _up() -> None:
    return None


@pytest.fixture
def app() -> Any:
    settings = Settings(jwt_secret=SecretStr(SECRET))
    return create_app(settings, pool=FakePool(), kafka_ping=_up)  # type: ignore[arg-type]


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


async def _post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return response.json()


@pytest.mark.parametrize(
    ("query", "variables", "named"),
    [
        (
            "query($id: ID!) { carePlan(id: $id) { id } }",
            {"id": "plan-1\u202e"},
            "id must not contain a bidirectional-control character (U+202E), found at character 7.",
        ),
        (
            '{ patient(id: "p\u200b1") { id } }',
            {},
            "id must not contain a zero-width character (U+200B), found at character 2.",
        ),
        (  # a Hangul filler is printable, yet renders as nothing
            "query($id: ID!) { patient(id: $id) { id } }",
            {"id": "p-\u3164"},
            "id must not contain an invisible filler character (U+3164), found at character 3.",
        ),
        (  # a variable's default value is a literal of the document, too
            'query($id: ID = "plan-1\u202e") { carePlan(id: $id) { id } }',
            {},
            "id must not contain a bidirectional-control character (U+202E), found at character 7.",
        ),
        (
            'query($f: AuditFilter = {actorId: "u\u001b[2J"}) '
            "{ auditTrail(filter: $f) { entries { seq } } }",
            {},
            "f.actorId must not contain a control character (U+001B), found at character 2.",
        ),
        (
            "query($f: AuditFilter!) { auditTrail(filter: $f) { entries { seq } } }",
            {"f": {"actorId": "u\x1b[2J"}},
            "f.actorId must not contain a control character (U+001B), found at character 2.",
        ),
    ],
)
async def test_a_hidden_character_is_refused_naming_the_argument_before_any_lookup(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], named: str
) -> None:
    body = await _post(client, query, variables)

    [error] = body["errors"]
    assert error["message"] == named
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert body.get("data") is None


async def test_a_subscription_with_a_hidden_character_is_refused_the_same_way(app: Any) -> None:
    query = "subscription($t: ID!) { boardChanged(teamId: $t) { change } }"
    async with websocket(app) as ws:
        await ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {TOKEN}"}}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": query, "variables": {"t": "t\u2066"}},
            }
        )
        message = await ws.receive_json()

    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert errors[0]["message"].startswith("t must not contain a bidirectional-control character")


async def test_a_document_run_again_from_the_cache_is_refused_again(
    client: httpx.AsyncClient,
) -> None:
    query = '{ patient(id: "p\u200b1") { id } }'
    for _ in range(3):
        body = await _post(client, query, {})

        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_a_documents_literals_are_walked_once_and_let_go_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walks = []
    monkeypatch.setattr(arguments, "visit", lambda *a: walks.append(1) or graphql.visit(*a))
    document = graphql.parse('{ patient(id: "p-1") { id } }')

    first = arguments._literals(document)
    again = arguments._literals(document)

    assert first == again == [("id", "p-1")]
    assert len(walks) == 1
    key = id(document)
    del document
    gc.collect()
    assert key not in arguments._LITERALS
