"""The Faust worker on the real broker and database: each event applied once per team,
poison messages dead-lettered without stopping the stream."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from schemas import codec
from services.common import kafka
from services.common.event_store import EventStore
from services.settings import Settings
from tests.conftest import wait_until
from tests.factories import goal_added
from tests.integration.kafka_helpers import read_topic
from tests.integration.workers import environment


@pytest.fixture
def worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = {**environment(settings), "CARECOORD_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "worker"], env=env)
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
    settings: Settings, pool: asyncpg.Pool[Any], worker: subprocess.Popen[bytes]
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
