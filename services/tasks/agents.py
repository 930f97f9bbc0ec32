"""The board agents of the worker: care.events projected into read models in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.common import dates, db, kafka
from services.common.dev_secrets import pipeline_keys
from services.common.log import get_logger
from services.common.progress import Progress
from services.common.projection import (
    PoisonMessage,
    Positioned,
    Projection,
    apply_batch,
    apply_batches,
    parse,
)
from services.common.worker import (
    EVENTS_APPLIED,
    OVERDUE_ANNOUNCED,
    TRANSIENT,
    DeadLetter,
    gathered,
    headers_of,
    raw_topic,
    retrying,
)
from services.settings import Settings
from services.tasks import rebuild, signal_agents, store
from services.tasks.activity import TeamActivity
from services.tasks.monitoring_store import SignalsProjection
from services.tasks.publisher import BoardPublisher
from services.tasks.signal_agents import SignalTimers
from services.tasks.store import BoardProjection

log = get_logger(__name__)
# The most events the projector applies in one transaction.
BATCH = 500
# How often a worker drops board changes past their history (each call drops a bounded
# batch, so a backlog goes over a few calls).
_PRUNE_SECONDS = 60.0


def install(
    app: faust.App,
    settings: Settings,
    to_dlq: DeadLetter,
    projections: Sequence[Projection] | None = None,
) -> None:
    """The board projector agent on care.events, and the board timers."""
    events = raw_topic(app, settings.events_topic)
    active = list(projections) if projections is not None else default_projections()
    shared = _Shared(settings)
    timers = SignalTimers(settings, shared.pool)
    signal_agents.install(app, settings, timers)

    progress = {projection.name: Progress() for projection in active}
    signals = [p for p in active if isinstance(p, SignalsProjection)]

    async def project(pool: asyncpg.Pool[Any], batch: list[tuple[Any, Positioned]]) -> None:
        items = [item for _, item in batch]
        # Every read model in one transaction; should that fail, each on its own, and
        # within one that fails, event by event, so a poison event is found and
        # dead-lettered while the others land.
        together: dict[str, int] | None = None
        try:
            together = await retrying(lambda: apply_batches(pool, active, items))
        except Exception as exc:
            log.warning("worker.batch_split", error=type(exc).__name__, events=len(items))
        for projection in active:
            applied = 0
            if together is not None:
                applied = together[projection.name]
            else:
                try:
                    applied = await retrying(lambda p=projection: apply_batch(pool, p, items))
                except Exception:
                    for message, item in batch:
                        try:
                            applied += await retrying(
                                lambda p=projection, i=item: apply_batch(pool, p, [i])
                            )
                        except Exception as exc:
                            why = f"{projection.name}: {type(exc).__name__}: {exc}"
                            await to_dlq(message, why)
            EVENTS_APPLIED.labels(projection.name).inc(applied)
            if applied and isinstance(projection, BoardProjection):
                shared.kick()  # subscribers wait on these; the other read models do not
            if (done := progress[projection.name].add(applied)) is not None:
                log.info(
                    "worker.progress",
                    projection=projection.name,
                    applied=done,
                    position=max(item.position for item in items),
                )

    @app.agent(events, name="project")
    async def project_events(stream: Any) -> None:
        pool = await shared.pool()
        if filled := await retrying(lambda: rebuild.adopt(pool)):
            log.info("worker.read_models_filled", projections=filled)
        # Closed with the agent, so its reader of the stream stops with it.
        async with contextlib.aclosing(gathered(stream, BATCH)) as batches:
            async for batch in batches:
                good: list[tuple[Any, Positioned]] = []
                for event in batch:
                    try:
                        good.append(
                            (event.message, parse(event.message.value, headers_of(event.message)))
                        )
                    except PoisonMessage as exc:
                        await to_dlq(event.message, str(exc), kind="undecodable")
                await project(pool, good)
                shared.kick()
                # The drain sends the signals this batch queued. A batch that queued none
                # leaves it be (a transaction of four statements for nothing): what an
                # earlier drain could not send goes with the next one, or the timer's.
                if sum([p.take_queued() for p in signals]):
                    timers.kick()

    # Faust's decorators are untyped.
    @app.timer(interval=settings.overdue_check_seconds)  # type: ignore[untyped-decorator]
    async def announce_overdue() -> None:
        """Tell subscribers once about each task that has become overdue since the last look."""
        pool = await shared.pool()
        today = dates.earliest_today(datetime.now(UTC))
        try:
            async with pool.acquire() as conn, conn.transaction():
                tasks = await store.announce_overdue(conn, today, limit=1000)
        except TRANSIENT as exc:
            log.warning("worker.database_unavailable", error=type(exc).__name__)
            return
        if tasks:
            OVERDUE_ANNOUNCED.inc(len(tasks))
            log.info("worker.overdue_announced", count=len(tasks))
            await shared.flush()

    @app.timer(interval=settings.board_outbox_sweep_seconds)  # type: ignore[untyped-decorator]
    async def sweep_outbox() -> None:
        """Publish what a worker that died between commit and publish left queued."""
        await shared.flush()

    @app.timer(interval=_PRUNE_SECONDS)  # type: ignore[untyped-decorator]
    async def prune_changes() -> None:
        """Drop the board changes older than the history subscribers may resume from."""
        pool = await shared.pool()
        keep = timedelta(hours=settings.board_history_hours)
        try:
            async with pool.acquire() as conn:
                dropped = await store.prune_changes(conn, datetime.now(UTC) - keep)
        except TRANSIENT as exc:
            log.warning("worker.database_unavailable", error=type(exc).__name__)
            return
        if dropped:
            log.info("worker.board_changes_pruned", count=dropped)

    # faust types receivers as returning None | Awaitable, which mypy will not match to an
    # async def; faust awaits them at runtime.
    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_shared(_app: Any, **_: Any) -> None:
        await timers.close()
        await shared.close()


def default_projections() -> list[Projection]:
    # The board first: its changes are published (to subscribers) as soon as it commits.
    return [BoardProjection(), TeamActivity(), SignalsProjection()]


class _Shared:
    """The pool and board publisher the agent and timers share, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._pool: asyncpg.Pool[Any] | None = None
        self._publisher: BoardPublisher | None = None
        self._producer: AIOKafkaProducer | None = None
        # Publishing runs beside the agent: it projects the next batch meanwhile.
        self._asked = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def pool(self) -> asyncpg.Pool[Any]:
        async with self._lock:
            if self._pool is None:
                assert self._settings.database_url
                self._pool = await db.create_pool(
                    self._settings.database_url, min_size=1, max_size=4
                )
            return self._pool

    def kick(self) -> None:
        """Have the board changes just committed published, without waiting for it."""
        self._asked.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_when_asked(), name="board-flusher")

    async def _flush_when_asked(self) -> None:
        while True:
            await self._asked.wait()
            self._asked.clear()
            try:
                await self.flush()
            except Exception:  # the sweep timer publishes what this left queued
                log.exception("worker.board_flush_failed")

    async def flush(self) -> None:
        """Publish queued board changes; a broker outage leaves them queued for later."""
        try:
            publisher = await self._board_publisher()
            await publisher.flush()
        except (*TRANSIENT, KafkaError) as exc:
            log.warning("worker.board_updates_unpublished", error=type(exc).__name__)
            await self._drop_producer()

    async def _board_publisher(self) -> BoardPublisher:
        pool = await self.pool()
        async with self._lock:
            if self._publisher is None:
                keys = pipeline_keys(self._settings)  # before a producer that would leak
                # No linger: a flush sends its whole batch before it waits for the acks, so
                # the batch stays one request, and a lone change goes at once.
                producer = kafka.make_producer(self._settings, linger_ms=0)
                await producer.start()
                self._producer = producer
                self._publisher = BoardPublisher(
                    pool, producer, self._settings.board_updates_topic, keys
                )
            return self._publisher

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
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
