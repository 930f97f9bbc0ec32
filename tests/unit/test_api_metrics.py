"""/metrics of the API: operation names bounded to the shipped ones, subscriptions counted
by outcome; the hub's counts; the rate-limited progress lines of the relay and worker."""

from __future__ import annotations

import random
import re
import string
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.api import known_operations
from services.api.app import create_app
from services.api.fanout import Hub
from services.common.auth import mint_token
from services.common.progress import Progress
from services.settings import Settings
from tests.unit.test_api_app import FakePool, websocket

SECRET = "api-unit-test-secret-long-enough-for-hs256"
TOKEN = mint_token(secret=SECRET, sub="u-42", name="Dr Who")
ROOT = Path(__file__).resolve().parents[2]
# A named operation in a document: `query Name(`, `mutation Name {`, ...
_NAMED = re.compile(r"\b(?:query|mutation|subscription)\s+([A-Z][A-Za-z0-9_]*)\s*[({]")


async def _up() -> None:
    return None


@pytest.fixture
def app() -> Any:
    settings = Settings(jwt_secret=SecretStr(SECRET))
    return create_app(settings, pool=FakePool(), kafka_ping=_up)  # type: ignore[arg-type]


@pytest.fixture
async def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def _label_values(metrics: str, metric: str, label: str) -> set[str]:
    pattern = re.compile(rf'^{metric}\{{[^}}]*\b{label}="([^"]*)"', re.MULTILINE)
    return set(pattern.findall(metrics))


def _random_name(rng: random.Random) -> str:
    return rng.choice(string.ascii_letters) + "".join(
        rng.choices(string.ascii_letters + string.digits + "_", k=rng.randint(0, 40))
    )


async def test_a_flood_of_operation_names_adds_at_most_one_label_value(
    client: httpx.AsyncClient,
) -> None:
    rng = random.Random(21)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with client:
        await client.post("/graphql", json={"query": "query Me { me { userId } }"}, headers=headers)
        before = _label_values(
            (await client.get("/metrics")).text, "carecoord_graphql_operations_total", "name"
        )
        for _ in range(600):
            query = f"query {_random_name(rng)} {{ me {{ userId }} }}"
            await client.post("/graphql", json={"query": query}, headers=headers)
        after = _label_values(
            (await client.get("/metrics")).text, "carecoord_graphql_operations_total", "name"
        )

    assert before == {"Me"}
    assert after - before == {"other"}


def test_only_shipped_names_are_label_values() -> None:
    assert known_operations.label("HuddleBoard") == "HuddleBoard"
    assert known_operations.label(None) == "anonymous"
    assert known_operations.label("") == "anonymous"
    assert known_operations.label("HuddleBoardX") == "other"
    assert known_operations.label("huddleboard") == "other"
    assert known_operations.label("x" * 10_000) == "other"


def test_every_operation_name_the_project_ships_is_a_known_one() -> None:
    sources = [ROOT / "README.md", ROOT / "services/api/static/board.js"]
    sources += sorted((ROOT / "services").rglob("*.py"))
    sources += sorted((ROOT / "tests/e2e").rglob("*.py"))
    sources += [ROOT / "tests/operations.py"]
    named = {name for path in sources for name in _NAMED.findall(path.read_text())}

    assert named, "no named operation found: the pattern no longer matches the documents"
    assert named - known_operations.KNOWN == set()


async def test_subscriptions_refused_at_connection_init_or_at_subscribe_are_counted(
    app: Any,
) -> None:
    async with websocket(app) as ws:  # no token: refused at connection_init
        await ws.send_json({"type": "connection_init", "payload": {}})
        await ws.receive_close()
    async with websocket(app) as ws:  # a subscription refused (BAD_USER_INPUT)
        await ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {TOKEN}"}}
        )
        assert (await ws.receive_json())["type"] == "connection_ack"
        query = "subscription($t: ID!) { boardChanged(teamId: $t) { change } }"
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": query, "variables": {"t": "t\u2066"}},
            }
        )
        await ws.receive_json()

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        metrics = (await client.get("/metrics")).text

    assert 'carecoord_subscription_outcomes{outcome="refused"} 2.0' in metrics


async def test_the_hub_counts_subscriptions_started_and_ended() -> None:
    hub = Hub(Settings(_env_file=None))  # type: ignore[call-arg]
    with hub.subscribe("t-1", on_overflow=lambda: None):
        with hub.subscribe("t-2", on_overflow=lambda: None):
            assert (hub.started, hub.ended) == (2, 0)
        assert (hub.started, hub.ended) == (2, 1)

    assert (hub.started, hub.ended, hub.subscribers) == (2, 2, 0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_due_at_first_then_every_ten_seconds_or_ten_thousand_items() -> None:
    clock = _Clock()
    progress = Progress(seconds=10, count=10_000, clock=clock)

    assert progress.add(0) is None  # nothing moved yet: nothing to say
    assert progress.add(2) == 2  # the first items: at once
    clock.now += 1
    assert progress.add(500) is None
    clock.now += 10
    assert progress.add(500) == 1000  # ten seconds since the start
    clock.now += 1
    assert progress.add(9_999) is None
    assert progress.add(1) == 10_000  # ten thousand items within a second
    clock.now += 60
    assert progress.add(0) is None  # nothing moved: nothing to say
    clock.now += 1
    assert progress.add(3) is None  # the quiet minute does not count as time passed
