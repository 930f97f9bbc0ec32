"""The raw limits: PostgreSQL COPY and one-row transactions, aiokafka produce and consume,
each with ~1 KB payloads on the run's own table or topic, and one message's hop from
producer to consumer."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from services.bench.harness import Figures, Run, percentile
from services.common import kafka
from services.settings import Settings

PAYLOAD = 1000
HOPS = 200
WRITERS = 16
BATCH = 1000


async def pg(run: Run) -> Figures:
    rows = run.sizes.rows
    async with run.pool.acquire() as conn:
        await conn.execute("CREATE TABLE bench_raw (at timestamptz, n bigint, body bytea)")
        now = datetime.now(UTC)
        batches = [
            [(now, b * BATCH + i, os.urandom(PAYLOAD)) for i in range(BATCH)]
            for b in range(max(1, rows // BATCH))
        ]
        started = time.perf_counter()
        for batch in batches:
            await conn.copy_records_to_table(
                "bench_raw", records=batch, columns=("at", "n", "body")
            )
        copy = len(batches) * BATCH / (time.perf_counter() - started)

    per = max(1, rows // 10 // WRITERS)
    body = os.urandom(PAYLOAD)

    async def writer(w: int) -> None:
        async with run.pool.acquire() as conn:
            for i in range(per):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO bench_raw VALUES (now(), $1, $2)", w * per + i, body
                    )

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    commit = per * WRITERS / (time.perf_counter() - started)
    async with run.pool.acquire() as conn:
        await conn.execute("DROP TABLE bench_raw")
    return {"raw_pg_copy": copy, "raw_pg_commit": commit}


async def kafka_raw(run: Run) -> Figures:
    settings, count = run.settings, run.sizes.messages
    topic = settings.topic("bench.raw")
    await kafka.ensure_topics(settings, [topic])
    value = os.urandom(PAYLOAD)
    producer = kafka.make_producer(settings, max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        pending = []
        for n in range(count):
            pending.append(await producer.send(topic, value=value, key=str(n % 64).encode()))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        produce = count / (time.perf_counter() - started)
    finally:
        await producer.stop()

    consumer = kafka.make_consumer(settings, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        consumer.assign(await kafka.partitions_for(consumer, topic))
        seen, started = 0, time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(messages) for messages in batches.values())
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"consumed {seen} of {count} messages in 300 s")
        consume = seen / (time.perf_counter() - started)
        hops = await _hops(settings, consumer, topic, HOPS)
    finally:
        await consumer.stop()
    return {
        "raw_kafka_produce": produce,
        "raw_kafka_consume": consume,
        "raw_kafka_hop_p50": statistics.median(hops),
        "raw_kafka_hop_p99": percentile(hops, 0.99),
    }


async def _hops(
    settings: Settings, consumer: AIOKafkaConsumer, topic: str, count: int
) -> list[float]:
    """One small message at a time, from its send to the consumer (at the end of the
    topic, fetching as the stack's consumers fetch) having it: the hop a change makes
    twice on its way to a push, with the broker holding what the step sent."""
    producer = kafka.make_producer(settings, linger_ms=0)
    await producer.start()
    hops = []
    try:
        for n in range(count):
            marker = f"hop {n}".encode()
            started = time.perf_counter()
            await (await producer.send(topic, value=marker, key=b"hop"))
            while not any(
                m.value == marker
                for messages in (await consumer.getmany(timeout_ms=5000)).values()
                for m in messages
            ):
                if time.perf_counter() - started > 30:
                    raise TimeoutError(f"a message sent was not consumed within 30 s ({n})")
            hops.append((time.perf_counter() - started) * 1000)
    finally:
        await producer.stop()
    return hops
