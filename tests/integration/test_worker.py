"""The Faust worker on the real broker and database: each event applied once per team,
poison messages dead-lettered without stopping the stream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import codec
from services.common import embedded, kafka
from services.common.event_store import EventStore
from services.settings import Settings
from tests.conftest import wait_until
from tests.factories import goal_added
from tests.integration.kafka_helpers import read_topic
from tests.integration.workers import environment


@pytest.fixture
def metrics_port() -> int:
    return embedded.free_port()


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture
def worker(
    settings: Settings, metrics_port: int, worker_log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **environment(settings),
        "CARECOORD_LOG_LEVEL": "info",
        "CARECOORD_WORKER_METRICS_PORT": str(metrics_port),
    }
    with worker_log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker"], env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def activity(pool: asyncpg.Pool[Any], team: str) -> int:
    value = await pool.fetchval("SELECT events_applied FROM team_activity WHERE team_id = $1", team)
    return int(value or 0)


async def test_redelivered_and_poison_messages_change_nothing_and_the_stream_goes_on(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    worker: subprocess.Popen[bytes],
    metrics_port: int,
    worker_log: Path,
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    team = f"team-{uuid.uuid4().hex[:6]}"
    recorded = []
    for n in range(3):
        recorded += await store.append(
            f"plan-{team}",
            n,
            [goal_added(f"plan-{team}", team_id=team, description=f"goal {n}")],
        )

    def message(position: int, value: bytes) -> dict[str, Any]:
        return {
            "key": team.encode(),
            "value": value,
            "headers": [(kafka.POSITION_HEADER, str(position).encode())],
        }

    first, second, third = recorded
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        for m in (
            message(first.position, codec.encode(first.envelope)),
            message(first.position, codec.encode(first.envelope)),  # redelivered
            message(second.position, b"{not json"),  # poison
            message(second.position, codec.encode(second.envelope)),
            message(first.position, codec.encode(first.envelope)),  # late duplicate
            message(third.position, codec.encode(third.envelope)),
        ):
            await producer.send_and_wait(settings.events_topic, **m)
    finally:
        await producer.stop()

    async def applied_all() -> bool:
        assert worker.poll() is None, f"the worker exited with code {worker.returncode}"
        return await activity(pool, team) >= 3

    await wait_until(applied_all, seconds=60, what="the worker to apply 3 events")
    assert worker.poll() is None, "the worker must survive the poison message"
    assert await activity(pool, team) == 3
    last = await pool.fetchval(
        "SELECT position FROM projection_positions WHERE projection = 'team_activity' "
        "AND team_id = $1",
        team,
    )
    assert last == third.position

    dead = await read_topic(settings, settings.dlq_topic, until_positions={second.position})
    assert len(dead) == 1
    assert dead[0].value == b"{not json"

    # Counted on the worker's /metrics, by source topic and kind; progress logged at info
    # by projection and position, never with what an event says.
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    topic = settings.events_topic
    assert f'carecoord_dead_lettered_total{{kind="undecodable",topic="{topic}"}} 1.0' in metrics
    assert 'carecoord_projection_events_applied_total{projection="team_activity"} 3.0' in metrics
    log = await asyncio.to_thread(worker_log.read_text)
    assert "worker.progress" in log
    assert "goal 0" not in log
