"""Test helpers that read a topic back from the broker."""

from __future__ import annotations

import time
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


__all__ = ["Seen", "TopicPartition", "first_occurrences_per_key", "read_topic"]
