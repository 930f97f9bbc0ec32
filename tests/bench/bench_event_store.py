"""Benchmark (not a test): event-store appends and reads, and the outbox relay's publish
rate, beside a raw one-row-commit rate on the same database, in one run.

    .venv/bin/python -m tests.bench.bench_event_store [--events 4000] [--writers 16]

Uses CARECOORD_TEST_DATABASE_URL / CARECOORD_TEST_KAFKA_BOOTSTRAP when set, else starts an
embedded PostgreSQL (durable settings, as `carecoord up` runs it) and a Tansu broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from services.common import db, embedded
from services.common.event_store import EventStore, NewEvent
from services.common.outbox import OutboxRelay
from services.settings import Settings
from tests.factories import goal_added


def _event(stream: str, n: int) -> NewEvent:
    return goal_added(stream, team_id=f"team-{n % 50}", description=f"goal {n}", actor_id="bench")


async def _rate(label: str, count: int, work: object) -> float:
    started = time.perf_counter()
    await work  # type: ignore[misc]
    rate = count / (time.perf_counter() - started)
    print(f"{label:<44} {rate:>10,.0f} /s   ({count} in {count / rate:.2f} s)")
    return rate


async def run(dsn: str, bootstrap: str, events: int, writers: int) -> None:
    pool = await db.create_pool(dsn, min_size=writers, max_size=writers + 4)
    await db.migrate(pool)
    store = EventStore(pool)
    per = events // writers

    async def raw_commits() -> None:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (n int, body text)")

        async def one(w: int) -> None:
            async with pool.acquire() as conn:
                for i in range(per):
                    async with conn.transaction():
                        await conn.execute("INSERT INTO bench_raw VALUES ($1, $2)", i, "x" * 300)

        await asyncio.gather(*(one(w) for w in range(writers)))

    async def appends() -> None:
        async def one(w: int) -> None:
            stream = f"bench-{uuid.uuid4().hex}"
            for v in range(per):
                await store.append(stream, v, [_event(stream, v)])

        await asyncio.gather(*(one(w) for w in range(writers)))

    async def reads() -> None:
        after = 0
        while batch := await store.read_all(after, 1000):
            after = batch[-1].position

    print(f"{'what':<44} {'rate':>10}")
    await _rate(f"raw one-row commits ({writers} writers)", per * writers, raw_commits())
    await _rate(f"event store appends ({writers} writers, 1 event)", per * writers, appends())
    head = await store.head()
    await _rate("read_all (decoded, 1000 per page)", head, reads())
    settings = Settings(
        database_url=dsn, kafka_bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}."
    )
    stop = asyncio.Event()
    relay = OutboxRelay(settings=settings, pool=pool)

    async def relay_all() -> None:
        task = asyncio.create_task(relay.run(stop))
        while relay.published < head:  # noqa: ASYNC110 - polling a counter is the point
            await asyncio.sleep(0.01)
        stop.set()
        await task

    await _rate("outbox relay store -> Kafka (acks=all)", head, relay_all())
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--writers", type=int, default=16)
    args = parser.parse_args()
    procs = []
    dsn = os.environ.get("CARECOORD_TEST_DATABASE_URL")
    bootstrap = os.environ.get("CARECOORD_TEST_KAFKA_BOOTSTRAP")
    tmp = Path(tempfile.mkdtemp(prefix="carecoord-bench-"))
    try:
        if not dsn:
            pg = embedded.EmbeddedPostgres(tmp / "pg", embedded.free_port())
            pg.initdb()
            procs.append((embedded.spawn(pg.spec(tmp / "pg.log")), pg.spec().stop_signal))
            dsn = pg.dsn
        else:
            name = f"carecoord_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}"'))
            dsn = dsn.rsplit("/", 1)[0] + f"/{name}"
        if not bootstrap:
            port = embedded.free_port()
            spec = embedded.tansu_spec(port, tmp / "tansu.log")
            procs.append((embedded.spawn(spec), spec.stop_signal))
            bootstrap = f"127.0.0.1:{port}"
        asyncio.run(_wait_and_run(dsn, bootstrap, args.events, args.writers))
    finally:
        for proc, sig in reversed(procs):
            embedded.stop(proc, sig)


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(sql)
    await conn.close()


async def _wait_and_run(dsn: str, bootstrap: str, events: int, writers: int) -> None:
    host, _, port = bootstrap.rpartition(":")
    for _ in range(200):
        try:
            await _admin(dsn, "SELECT 1")
            if embedded.port_in_use(int(port), host):
                break
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(0.1)
    await run(dsn, bootstrap, events, writers)


if __name__ == "__main__":
    main()
