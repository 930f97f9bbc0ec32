"""The outbox relay against a real broker: at-least-once, per-team order, restart-safe,
and a broker that comes back empty is refilled from the store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import asyncpg
import structlog

from schemas import codec
from services.common.event_store import EventStore
from services.common.outbox import OutboxRelay
from services.settings import Settings
from tests.conftest import Broker, wait_until
from tests.factories import goal_added
from tests.integration.kafka_helpers import first_occurrences_per_key, read_topic

TEAMS = [f"team-{i}" for i in range(7)]


async def append_events(store: EventStore, count: int, *, tag: str) -> None:
    """count single-event appends spread over the teams, each team its own stream."""
    for n in range(count):
        team = TEAMS[n % len(TEAMS)]
        stream = f"{tag}-{team}"
        await store.append(stream, None, [goal_added(stream, team_id=team, description=f"g{n}")])


async def checkpoint(pool: asyncpg.Pool[Any], topic: str) -> int:
    value = await pool.fetchval("SELECT position FROM relay_checkpoints WHERE topic = $1", topic)
    return int(value or 0)


def assert_complete_and_ordered_per_team(
    seen_positions: dict[bytes, list[int]], total: int
) -> None:
    every = sorted(p for positions in seen_positions.values() for p in positions)
    assert every == list(range(1, total + 1))
    for key, positions in seen_positions.items():
        assert positions == sorted(positions), f"team {key!r} out of order"


async def test_the_relay_publishes_every_event_keyed_by_team_with_its_position(
    settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    store = EventStore(pool)
    await append_events(store, 60, tag="a")
    stop = asyncio.Event()
    relay = OutboxRelay(settings=settings, pool=pool)
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_until(
            lambda: checkpoint(pool, settings.events_topic), what="the relay to catch up"
        )
        await wait_until(
            lambda: _equals(checkpoint(pool, settings.events_topic), 60), what="position 60"
        )
        seen = await read_topic(settings, settings.events_topic, until_positions=set(range(1, 61)))
    finally:
        stop.set()
        await task

    assert len(seen) == 60
    for s in seen:
        envelope = codec.decode(s.value)
        assert s.key == envelope.team_id.encode()
    assert_complete_and_ordered_per_team(first_occurrences_per_key(seen), 60)


async def test_the_relay_logs_its_progress_by_position_and_lag_without_what_events_say(
    settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    store = EventStore(pool)
    await append_events(store, 5, tag="p")
    stop = asyncio.Event()
    relay = OutboxRelay(settings=settings, pool=pool)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(relay.run(stop))
        try:
            await wait_until(
                lambda: _equals(checkpoint(pool, settings.events_topic), 5), what="position 5"
            )
        finally:
            stop.set()
            await task

    [progress] = [line for line in logs if line["event"] == "relay.progress"]
    assert progress["log_level"] == "info"
    assert progress["position"] == 5
    assert progress["published"] == 5
    assert progress["lag"] == 0
    assert "g0" not in repr(logs)


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_a_relay_killed_mid_stream_and_restarted_publishes_everything_in_team_order(
    settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    store = EventStore(pool)
    total = 3000
    await append_events(store, total, tag="k")
    env = {
        **os.environ,
        "CARECOORD_DATABASE_URL": settings.database_url or "",
        "CARECOORD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "CARECOORD_TOPIC_PREFIX": settings.topic_prefix,
        # The pipeline key the relay signs care.audit with, made by the settings fixture.
        "CARECOORD_DATA_DIR": str(settings.data_dir),
        "CARECOORD_RELAY_BATCH_SIZE": "50",
        "CARECOORD_LOG_LEVEL": "warning",
    }
    argv = [sys.executable, "-m", "services.cli", "relay"]
    first = subprocess.Popen(argv, env=env)
    try:
        await wait_until(
            lambda: _positive(checkpoint(pool, settings.events_topic)),
            what="the first relay to publish something",
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = await checkpoint(pool, settings.events_topic)
        assert 0 < killed_at < total, "the relay must be killed mid-stream"

        second = subprocess.Popen(argv, env=env)
        try:
            await wait_until(
                lambda: _equals(checkpoint(pool, settings.events_topic), total),
                seconds=60,
                what="the restarted relay to reach the head",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
    finally:
        if first.poll() is None:
            first.kill()

    seen = await read_topic(
        settings, settings.events_topic, until_positions=set(range(1, total + 1))
    )
    assert_complete_and_ordered_per_team(first_occurrences_per_key(seen), total)


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


async def test_a_broker_restarted_empty_is_refilled_from_the_store(
    settings: Settings, pool: asyncpg.Pool[Any], own_broker: Broker
) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})
    store = EventStore(pool)
    await append_events(store, 200, tag="b")
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(settings=settings, pool=pool).run(stop))
    try:
        await wait_until(
            lambda: _equals(checkpoint(pool, settings.events_topic), 200), what="first fill"
        )
        own_broker.restart_empty()
        await append_events(store, 100, tag="b")
        seen = await read_topic(
            settings, settings.events_topic, until_positions=set(range(1, 301)), seconds=60
        )
    finally:
        stop.set()
        await task

    assert_complete_and_ordered_per_team(first_occurrences_per_key(seen), 300)
