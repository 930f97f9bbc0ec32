"""Test helpers that read a topic back from the broker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import TopicPartition

from services.common import kafka
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


async def read_to_end(
    settings: Settings, topic: str, *, quiet: float = 1.0, seconds: float = 30
) -> list[Received]:
    """Every message the topic holds now, in partition-offset order: read past the end
    offsets the broker reports, then on until nothing more came for `quiet` seconds.
    (Tansu reports a partition's end as the first offset of its last record batch + 1,
    short of the real end when that batch holds several records.)"""
    consumer = kafka.make_consumer(settings)
    await consumer.start()
    received: list[Received] = []
    try:
        tps = await kafka.partitions_for(consumer, topic)
        assert tps, f"topic {topic} has no partitions"
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + seconds
        last_news = time.monotonic()
        while [
            tp for tp in tps if await consumer.position(tp) < ends[tp]
        ] or time.monotonic() - last_news < quiet:
            assert time.monotonic() < deadline, f"could not read {topic} to its end in time"
            batch = await consumer.getmany(timeout_ms=100)
            for tp, messages in batch.items():
                last_news = time.monotonic()
                received += [
                    Received(
                        partition=tp.partition,
                        offset=m.offset,
                        key=m.key or b"",
                        headers={k: bytes(v) for k, v in m.headers},
                        value=m.value or b"",
                    )
                    for m in messages
                ]
    finally:
        await consumer.stop()
    return sorted(received, key=lambda r: (r.partition, r.offset))


async def produce(
    settings: Settings, topic: str, messages: Iterable[tuple[bytes, bytes, int | None]]
) -> None:
    """Send (key, value, store position) messages in order and wait for each ack; a
    position of None sends no position header."""
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        for key, value, position in messages:
            headers = [] if position is None else [(kafka.POSITION_HEADER, str(position).encode())]
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
