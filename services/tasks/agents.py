"""The Faust worker: agents that project care.events into read models in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.common import dates, db, kafka
from services.common.log import get_logger
from services.common.projection import (
    ERROR_HEADER,
    SOURCE_HEADER,
    PoisonMessage,
    Positioned,
    Projection,
    apply_batch,
    parse,
)
from services.settings import Settings
from services.tasks import store
from services.tasks.activity import TeamActivity
from services.tasks.publisher import BoardPublisher
from services.tasks.store import BoardProjection

log = get_logger(__name__)

# Errors that say the database is away, not that the event is bad: retry, never DLQ.
_TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # Concurrency, not content: the same batch succeeds when tried again.
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    TimeoutError,
)


def _lower_fetch_wait(ms: int) -> None:
    """Faust hard-codes fetch_max_wait_ms=1500 for its consumer; the embedded broker
    answers a fetch only when that wait runs out, which would hold every board update
    back by up to 1.5 s. Set the consumer's wait before it starts."""
    original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_carecoord_patched", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create._carecoord_patched = True  # type: ignore[attr-defined]
    # Faust has no setting for this wait; replacing its consumer factory is the only hook.
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def create_worker_app(
    settings: Settings, *, projections: Sequence[Projection] | None = None
) -> faust.App:
    assert settings.kafka_bootstrap and settings.database_url
    _lower_fetch_wait(settings.kafka_fetch_max_wait_ms)
    session = settings.worker_session_timeout
    datadir = settings.data_dir.resolve() / "worker"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        f"{settings.topic_prefix}carecoord-worker",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(session / 6, 0.5),
        broker_request_timeout=max(90.0, session * 2),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=False,
        store="memory://",
        # Faust keeps a folder even without tables; keep it with the stack's data.
        datadir=str(datadir),
    )
    events = app.topic(
        settings.events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    dlq = app.topic(
        settings.dlq_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    active = list(projections) if projections is not None else default_projections()
    shared = _Shared(settings)

    async def to_dlq(message: Any, reason: str) -> None:
        headers = [(k, v) for k, v in _headers(message).items() if k != ERROR_HEADER]
        headers += [
            (ERROR_HEADER, reason.encode()[:4000]),
            (SOURCE_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode()),
        ]
        await dlq.send(key=message.key, value=message.value, headers=headers)
        log.warning(
            "worker.dead_lettered",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reason=reason[:200],
        )

    async def project(pool: asyncpg.Pool[Any], batch: list[tuple[Any, Positioned]]) -> None:
        items = [item for _, item in batch]
        for projection in active:
            try:
                await _retrying(lambda p=projection: apply_batch(pool, p, items))
            except Exception:
                for message, item in batch:
                    try:
                        await _retrying(lambda p=projection, i=item: apply_batch(pool, p, [i]))
                    except Exception as exc:
                        await to_dlq(message, f"{projection.name}: {type(exc).__name__}: {exc}")

    @app.agent(events, name="project")
    async def project_events(stream: Any) -> None:
        pool = await shared.pool()
        async for batch in stream.take_events(500, within=0.01):
            good: list[tuple[Any, Positioned]] = []
            for event in batch:
                try:
                    good.append(
                        (event.message, parse(event.message.value, _headers(event.message)))
                    )
                except PoisonMessage as exc:
                    await to_dlq(event.message, str(exc))
            await project(pool, good)
            await shared.flush()

    # Faust's decorators are untyped.
    @app.timer(interval=settings.overdue_check_seconds)  # type: ignore[untyped-decorator]
    async def announce_overdue() -> None:
        """Tell subscribers once about each task that has become overdue since the last look."""
        pool = await shared.pool()
        today = dates.earliest_today(datetime.now(UTC))
        try:
            async with pool.acquire() as conn, conn.transaction():
                tasks = await store.announce_overdue(conn, today, limit=1000)
        except _TRANSIENT as exc:
            log.warning("worker.database_unavailable", error=type(exc).__name__)
            return
        if tasks:
            log.info("worker.overdue_announced", count=len(tasks))
            await shared.flush()

    @app.timer(interval=settings.board_outbox_sweep_seconds)  # type: ignore[untyped-decorator]
    async def sweep_outbox() -> None:
        """Publish what a worker that died between commit and publish left queued."""
        await shared.flush()

    # faust types receivers as returning None | Awaitable, which mypy will not match to an
    # async def; faust awaits them at runtime.
    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_shared(_app: Any, **_: Any) -> None:
        await shared.close()

    return app


def default_projections() -> list[Projection]:
    return [TeamActivity(), BoardProjection()]


class _Shared:
    """The pool and board publisher the agent and timers share, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._pool: asyncpg.Pool[Any] | None = None
        self._publisher: BoardPublisher | None = None
        self._producer: AIOKafkaProducer | None = None

    async def pool(self) -> asyncpg.Pool[Any]:
        async with self._lock:
            if self._pool is None:
                assert self._settings.database_url
                self._pool = await db.create_pool(
                    self._settings.database_url, min_size=1, max_size=4
                )
            return self._pool

    async def flush(self) -> None:
        """Publish queued board changes; a broker outage leaves them queued for later."""
        try:
            publisher = await self._board_publisher()
            await publisher.flush()
        except (*_TRANSIENT, KafkaError) as exc:
            log.warning("worker.board_updates_unpublished", error=type(exc).__name__)
            await self._drop_producer()

    async def _board_publisher(self) -> BoardPublisher:
        pool = await self.pool()
        async with self._lock:
            if self._publisher is None:
                producer = kafka.make_producer(self._settings)
                await producer.start()
                self._producer = producer
                self._publisher = BoardPublisher(pool, producer, self._settings.board_updates_topic)
            return self._publisher

    async def close(self) -> None:
        await self._drop_producer()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _drop_producer(self) -> None:
        async with self._lock:
            producer, self._producer, self._publisher = self._producer, None, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


def _headers(message: Any) -> dict[str, bytes]:
    raw = message.headers or {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {str(k): bytes(v) for k, v in items}


async def _retrying(call: Any) -> Any:
    """Wait out a database outage instead of dead-lettering good events."""
    delay = 0.2
    while True:
        try:
            return await call()
        except _TRANSIENT as exc:
            log.warning("worker.database_unavailable", error=type(exc).__name__, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
