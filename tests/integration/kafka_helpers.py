"""Test helpers that read a topic back from the broker (and the audit outbox)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from schemas import codec
from schemas.audit import AccessAction, AccessRecorded
from services.common import kafka
from services.common.dev_secrets import pipeline_keys
from services.settings import Settings


@dataclass(frozen=True)
class Seen:
    partition: int
    offset: int
    key: bytes
    position: int
    value: bytes


async def read_topic(
    settings: Settings, topic: str, *, until_positions: set[int], seconds: float = 60
) -> list[Seen]:
    """Every message on the topic, in partition-offset order, read until all the wanted
    store positions have been seen (or the time runs out)."""
    consumer = kafka.make_consumer(settings)
    await consumer.start()
    seen: list[Seen] = []
    try:
        tps = await kafka.partitions_for(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in sorted(batch.items(), key=lambda kv: kv[0].partition):
                for m in messages:
                    headers = dict(m.headers)
                    seen.append(
                        Seen(
                            partition=tp.partition,
                            offset=m.offset,
                            key=m.key or b"",
                            position=int(headers[kafka.POSITION_HEADER]),
                            value=m.value or b"",
                        )
                    )
            if until_positions <= {s.position for s in seen}:
                break
    finally:
        await consumer.stop()
    return seen


def first_occurrences_per_key(seen: list[Seen]) -> dict[bytes, list[int]]:
    """Per key, the positions in the order they first appear on the log."""
    by_partition: dict[int, list[Seen]] = {}
    for s in seen:
        by_partition.setdefault(s.partition, []).append(s)
    result: dict[bytes, list[int]] = {}
    done: set[int] = set()
    for messages in by_partition.values():
        for s in sorted(messages, key=lambda m: m.offset):
            if s.position in done:
                continue
            done.add(s.position)
            result.setdefault(s.key, []).append(s.position)
    return result


@dataclass(frozen=True)
class Received:
    """A message as read back, headers included (for topics without a position header)."""

    partition: int
    offset: int
    key: bytes
    headers: dict[str, bytes]
    value: bytes


_END_MARKER = b"carecoord-test-end-"


async def read_to_end(settings: Settings, topic: str, *, seconds: float = 30) -> list[Received]:
    """Every message the topic holds now, in partition-offset order. The end is marked by
    writing a message of our own to each partition (these are left out): Tansu
    reports a partition's end offset as its last record batch's first offset + 1, short
    of the real end when that batch holds several records."""
    marker = _END_MARKER + uuid.uuid4().hex.encode()
    consumer = kafka.make_consumer(settings)
    producer = kafka.make_producer(settings)
    received: list[Received] = []
    try:
        await consumer.start()
        await producer.start()
        tps = await kafka.partitions_for(consumer, topic)
        assert tps, f"topic {topic} has no partitions"
        ends = {
            tp: (await producer.send_and_wait(topic, key=marker, partition=tp.partition)).offset
            for tp in tps
        }
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + seconds
        while [tp for tp in tps if await consumer.position(tp) <= ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end in time"
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                received += [
                    Received(
                        partition=tp.partition,
                        offset=m.offset,
                        key=m.key or b"",
                        headers={k: bytes(v) for k, v in m.headers},
                        value=m.value or b"",
                    )
                    for m in messages
                    if m.offset < ends[tp] and not (m.key or b"").startswith(_END_MARKER)
                ]
    finally:
        await producer.stop()
        await consumer.stop()
    return sorted(received, key=lambda r: (r.partition, r.offset))


async def produce(
    settings: Settings,
    topic: str,
    messages: Iterable[tuple[bytes, bytes, int | None]],
    *,
    signed: bool = False,
) -> None:
    """Send (key, value, store position) messages in order and wait for each ack; a
    position of None sends no position header. Signed: with the services' pipeline MAC,
    as the API and the workers produce (care.audit, care.board-updates)."""
    keys = pipeline_keys(settings) if signed else None
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        for key, value, position in messages:
            headers = [] if position is None else [(kafka.POSITION_HEADER, str(position).encode())]
            if keys is not None:
                headers += keys.sign(topic, key, value)
            await producer.send_and_wait(topic, key=key, value=value, headers=headers)
    finally:
        await producer.stop()


__all__ = [
    "Received",
    "Seen",
    "TopicPartition",
    "first_occurrences_per_key",
    "produce",
    "read_to_end",
    "read_topic",
]


async def queued_in_outbox(settings: Settings) -> list[AccessRecorded]:
    """The access records in the test database's audit outbox, oldest first."""
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT value FROM audit_outbox ORDER BY queued_at, record_id")
    finally:
        await conn.close()
    return [codec.decode_access(bytes(r["value"])) for r in rows]


async def refuse_outbox(pool: asyncpg.Pool[Any]) -> None:
    """From now on, the test database refuses every row offered to the audit outbox (`pool`:
    the superuser's; the services' role may not create functions or triggers)."""
    await pool.execute(
        "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'the outbox refuses rows in this test'; END $$;"
        " CREATE TRIGGER refuse_outbox BEFORE INSERT ON audit_outbox"
        " FOR EACH ROW EXECUTE FUNCTION refuse_outbox()"
    )


async def access_records_sent(settings: Settings) -> list[AccessRecorded]:
    """Every access record on the audit topic, in order, packs read record by record."""
    await kafka.ensure_topics(settings, [settings.audit_topic])  # none, if nothing was sent
    received = await read_to_end(settings, settings.audit_topic)
    return [r for m in received for r in codec.decode_access_records(m.value)]


async def exports_recorded(settings: Settings) -> list[AccessRecorded]:
    """The access records of exports (action EXPORT) so far: committed to the audit outbox
    (no relay runs in these tests) or on the audit topic, each once."""
    found = await access_records_sent(settings) + await queued_in_outbox(settings)
    unique = {r.record_id: r for r in found}
    return [r for r in unique.values() if r.action is AccessAction.EXPORT]
