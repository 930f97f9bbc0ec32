"""The write side: event-store appends beside the `eventsourcing` library on the same
database, the relay filling care.events from the store, and `carecoord rebuild`."""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from schemas.common import TaskStatus
from schemas.task import TaskCreated, TaskMoved
from services.bench.harness import Figures, NotMeasured, Run, wait_until
from services.common.event_store import EventStore, NewEvent
from services.common.outbox import OutboxRelay
from services.tasks import rebuild as boards

WRITERS = 64
# A task's life in the store: created, then moved round this cycle.
CYCLE = (TaskStatus.IN_PROGRESS, TaskStatus.DONE, TaskStatus.TODO)
MOVES = 5
TITLES = ("Check foot pulses", "Titrate metformin", "Home BP log review", "Arrange transport")


@functools.cache
def _goal_class(aggregate: type[Any]) -> type[Any]:
    """The library's aggregate of one event, defined once a process: the library refuses a
    second class under the same topic, as a repeated run would define it."""

    class Goal(aggregate):  # type: ignore[misc]
        def __init__(self, description: str) -> None:
            self.description = description

    return Goal


async def eventsourcing(run: Run) -> Figures:
    """One-event aggregates saved by the library's PostgreSQL recorder, 64 threads (its
    pool as large), as the event store's 64 writers."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate
    except ImportError:
        raise NotMeasured(
            "the eventsourcing library is not installed (pip install 'carecoord[bench]')"
        ) from None

    goal = _goal_class(Aggregate)
    async with run.pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA eventsourcing_bench")
    dsn = urlsplit(run.settings.database_url or "")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dsn.path.lstrip("/"),
        "POSTGRES_HOST": dsn.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(dsn.port or 5432),
        "POSTGRES_USER": unquote(dsn.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(dsn.password or ""),
        "POSTGRES_SCHEMA": "eventsourcing_bench",
        "POSTGRES_POOL_SIZE": str(WRITERS),
        "CREATE_TABLE": "y",
    }
    saves = run.sizes.saves

    def measure() -> float:
        app: Application[Any] = Application(env=env)
        try:
            app.save(goal(description="warm-up"))
            started = time.perf_counter()
            with ThreadPoolExecutor(WRITERS) as pool:
                list(pool.map(lambda n: app.save(goal(description=f"goal {n}")), range(saves)))
            return saves / (time.perf_counter() - started)
        finally:
            app.close()

    return {"eventsourcing_append": await asyncio.to_thread(measure)}


def task_life(
    team_id: str, *, moves: int = MOVES, at: datetime | None = None
) -> tuple[str, list[NewEvent]]:
    """A task created, then moved `moves` times round CYCLE: its stream and events, dated
    from `at` a minute apart (None: the store's clock)."""
    task_id = str(uuid.uuid4())

    def when(n: int) -> datetime | None:
        return None if at is None else at + timedelta(minutes=n)

    events = [
        NewEvent(
            event=TaskCreated(
                task_id=task_id,
                team_id=team_id,
                title=random.choice(TITLES),  # noqa: S311 - sample data, not security
                patient_id=None,
                due_date=None,
                source="manual",
            ),
            team_id=team_id,
            actor_id="bench",
            occurred_at=when(0),
        )
    ]
    previous = TaskStatus.TODO
    for n in range(moves):
        status = CYCLE[n % len(CYCLE)]
        events.append(
            NewEvent(
                event=TaskMoved(task_id=task_id, status=status, previous=previous, reason=None),
                team_id=team_id,
                actor_id="bench",
                occurred_at=when(n + 1),
            )
        )
        previous = status
    return f"task-{task_id}", events


async def append(run: Run) -> Figures:
    """Task lives appended one event per call, as commands do, by 64 concurrent writers,
    spread over the run's teams; they are what the later steps project and rebuild."""
    lives = [
        task_life(f"bench-team-{n % run.sizes.teams:05d}")
        for n in range(max(WRITERS, run.sizes.appends // (MOVES + 1)))
    ]
    store = EventStore(run.pool)

    async def writer(w: int) -> None:
        for stream, events in lives[w::WRITERS]:
            for version, event in enumerate(events):
                await store.append(stream, version, [event])

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    seconds = time.perf_counter() - started
    total = sum(len(events) for _, events in lives)
    gaps = await run.pool.fetchval(
        "SELECT count(*) FROM (SELECT position - lag(position) OVER (ORDER BY position) AS d "
        "FROM events) s WHERE d <> 1"
    )
    if gaps:
        raise AssertionError(f"the store's positions have {gaps} gap(s)")
    run.shared["appended"] = total
    return {"append_events": total / seconds}


async def relay(run: Run) -> Figures:
    """The outbox relay publishing the whole store to care.events, for the projection."""
    head = await EventStore(run.pool).head()
    relay = OutboxRelay(settings=run.settings, pool=run.pool)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))

    async def caught_up() -> bool:
        if task.done():
            task.result()  # raises what stopped it
        return relay.published >= head

    try:
        await wait_until(caught_up, 300, "the relay publishing the store")
    finally:
        stop.set()
        await task
    run.shared["published"] = head
    return {"relay_events": head / (time.perf_counter() - started)}


async def rebuild(run: Run) -> Figures:
    rebuilt = await boards.rebuild(run.pool)
    if rebuilt.refused:
        raise AssertionError(f"{len(rebuilt.refused)} event(s) refused by the rebuild")
    return {"rebuild_events": rebuilt.events / rebuilt.seconds, "rebuild_teams": rebuilt.teams}
