"""The outbox relay against a real broker: at-least-once, per-team order, restart-safe,
and a broker that comes back empty is refilled from the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import codec
from services.common.event_store import EventStore
from services.common.kafka import POSITION_HEADER, BrokerUnavailable, KeyedPartitioner
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
    async with _relaying_after(settings, pool, 200, tag="b") as store:
        own_broker.restart_empty()
        await append_events(store, 100, tag="b")
        seen = await read_topic(
            settings, settings.events_topic, until_positions=set(range(1, 301)), seconds=60
        )

    assert_complete_and_ordered_per_team(first_occurrences_per_key(seen), 300)


@contextlib.asynccontextmanager
async def _relaying_after(
    settings: Settings, pool: asyncpg.Pool[Any], count: int, *, tag: str
) -> AsyncIterator[EventStore]:
    """`count` events appended, then a relay running until the block ends, the block
    entered once Kafka acknowledged them all."""
    store = EventStore(pool)
    await append_events(store, count, tag=tag)
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(settings=settings, pool=pool).run(stop))
    try:
        await _published(settings, pool, count)
        yield store
    finally:
        stop.set()
        await task


async def _published(settings: Settings, pool: asyncpg.Pool[Any], position: int) -> None:
    await wait_until(
        lambda: _equals(checkpoint(pool, settings.events_topic), position),
        what=f"position {position} acknowledged",
    )


class _Asked:
    """What the relay asks the broker, in order: each ListOffsets ("check", the
    partitions asked) and each event it sends ("send", partition, position), all passed
    on to the broker. `lose` makes the broker's next answer for that partition say its
    log ends at 0, once: a partition that lost its log alone (the embedded broker can
    only lose every partition at once, by a restart)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, Any, int]] = []
        self.lose: int | None = None
        end_offsets, send = AIOKafkaConsumer.end_offsets, AIOKafkaProducer.send

        async def asked_end_offsets(consumer: AIOKafkaConsumer, partitions: Any) -> Any:
            tps = list(partitions)
            self.log.append(("check", {tp.partition for tp in tps}, 0))
            ends = await end_offsets(consumer, tps)
            for tp in ends:
                if tp.partition == self.lose:
                    self.lose, ends[tp] = None, 0
            return ends

        async def sent(producer: AIOKafkaProducer, topic: str, **kwargs: Any) -> Any:
            headers = dict(kwargs.get("headers") or ())
            if POSITION_HEADER in headers:
                position = int(headers[POSITION_HEADER])
                self.log.append(("send", kwargs.get("partition"), position))
            return await send(producer, topic, **kwargs)

        monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", asked_end_offsets)
        monkeypatch.setattr(AIOKafkaProducer, "send", sent)

    def before_send_of(self, position: int) -> list[set[int]]:
        """The partitions of each check between the send before this position's and it."""
        at = next(i for i, e in enumerate(self.log) if e[0] == "send" and e[2] == position)
        start = max((i for i, e in enumerate(self.log[:at]) if e[0] == "send"), default=-1)
        return [e[1] for e in self.log[start + 1 : at] if e[0] == "check"]


def _checked_only_before_batches(settings: Settings) -> Settings:
    """The relay's check of every partition every few seconds out of the way."""
    return settings.model_copy(update={"relay_watermark_check_seconds": 3600.0})


def _partition_of(team: str, partitions: int) -> int:
    every = list(range(partitions))
    return KeyedPartitioner()(team.encode(), every, every)


def _teams_on_two_partitions(partitions: int) -> tuple[str, str]:
    by_partition = {_partition_of(team, partitions): team for team in TEAMS}
    assert len(by_partition) >= 2, "the test's teams must spread over two partitions"
    first, second = sorted(by_partition)[:2]
    return by_partition[first], by_partition[second]


async def _one_event(store: EventStore, team: str, tag: str) -> None:
    stream = f"{tag}-{team}"
    await store.append(stream, None, [goal_added(stream, team_id=team, description=tag)])


async def test_a_lone_event_after_another_of_its_team_has_only_its_partition_checked_first(
    settings: Settings, pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _checked_only_before_batches(settings)
    asked = _Asked(monkeypatch)
    team, _other = _teams_on_two_partitions(settings.topic_partitions)
    async with _relaying_after(settings, pool, 70, tag="f") as store:
        for n in range(4):
            await _one_event(store, team, f"lone{n}")
            await _published(settings, pool, 71 + n)

    own = {_partition_of(team, settings.topic_partitions)}
    # The first lone event follows the fill, sent to every partition: those are checked
    # beside its read. Each later one has its own partition checked once, before it goes.
    assert own <= set().union(*asked.before_send_of(71))
    assert [asked.before_send_of(p) for p in (72, 73, 74)] == [[own]] * 3


async def _lost_partition_is_refilled_before(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    asked: _Asked,
    *,
    last: str,
    losing: str,
) -> None:
    """Fill, send one event of `last`'s team, then have `losing`'s partition lose its
    log and that team commit: position 72 must reach that partition after its refill."""
    lost_partition = _partition_of(losing, settings.topic_partitions)
    with structlog.testing.capture_logs() as logs:
        async with _relaying_after(settings, pool, 70, tag="s") as store:
            await _one_event(store, last, "s-last")
            await _published(settings, pool, 71)
            asked.lose = lost_partition
            await _one_event(store, losing, "s-after")
            await _published(settings, pool, 72)
    seen = await read_topic(settings, settings.events_topic, until_positions=set(range(1, 73)))

    lost = [line for line in logs if line["event"] == "relay.broker_lost_data"]
    assert [line["reason"] for line in lost] == [
        f"partition {lost_partition} ends at 0, before the last acknowledged batch"
    ]
    # Position 72 was sent after the start-over: on its partition, the refill went ahead
    # of it (what the first fill put there is there twice before it).
    on_its_partition = sorted(
        (s for s in seen if s.partition == lost_partition), key=lambda s: s.offset
    )
    at = next(i for i, s in enumerate(on_its_partition) if s.position == 72)
    before = [s.position for s in on_its_partition[:at]]
    assert len(before) > len(set(before)), "the refill must reach the partition first"
    assert_complete_and_ordered_per_team(first_occurrences_per_key(seen), 72)


@pytest.mark.parametrize(
    "losing_is_last",
    [False, True],
    ids=["checked-after-the-read", "checked-beside-the-read"],
)
async def test_a_partition_that_lost_its_log_is_refilled_before_a_new_event_reaches_it(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    monkeypatch: pytest.MonkeyPatch,
    losing_is_last: bool,
) -> None:
    """The last batch went to the first team's partition; then the losing team's
    partition loses its log: the first team's own (checked beside the next read), or
    another (checked after it)."""
    first, second = _teams_on_two_partitions(settings.topic_partitions)
    await _lost_partition_is_refilled_before(
        _checked_only_before_batches(settings),
        pool,
        _Asked(monkeypatch),
        last=first,
        losing=first if losing_is_last else second,
    )


async def test_an_event_placed_on_a_partition_the_topic_no_longer_has_is_broker_trouble(
    settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    # As when the topic is made again with fewer partitions while a batch is sent: the
    # relay backs off and reads from its checkpoint again instead of dying.
    store = EventStore(pool)
    await append_events(store, 1, tag="g")
    relay = OutboxRelay(settings=settings, pool=pool)
    await relay._connect()
    try:
        batch = await store.read_all(0, 10)
        with pytest.raises(BrokerUnavailable, match="partition 99 is gone"):
            await relay._publish(batch, [99])
    finally:
        await relay._disconnect()
    assert await checkpoint(pool, settings.events_topic) == 0
