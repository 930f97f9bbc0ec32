"""Every read model applies a batch in one transaction (apply_batches), on a real
database: each skips what it applied before, and one that fails leaves the others'
changes and positions unwritten."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest

from schemas.board import BoardChange
from schemas.common import Sensitivity, TaskStatus
from services.common import db, kafka
from services.common.db import Conn
from services.common.dev_secrets import pipeline_keys
from services.common.event_store import EventStore
from services.common.projection import Positioned, apply_batches, positions
from services.settings import Settings
from services.tasks import publisher, store
from services.tasks.activity import TeamActivity
from services.tasks.agents import default_projections
from services.tasks.domain import Task
from services.tasks.projector import Board, Notice, Wanted
from tests.factories import task_created, task_moved
from tests.integration.goals import goals_appended
from tests.integration.kafka_helpers import read_to_end


async def _positions(pool: asyncpg.Pool[Any], name: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        return await positions(conn, name)


async def test_one_batch_lands_in_every_read_model_once(pool: asyncpg.Pool[Any]) -> None:
    first = await goals_appended(pool, "team-a", 3)
    other = await goals_appended(pool, "team-b", 2)
    projections = default_projections()

    applied = await apply_batches(pool, projections, first + other)
    again = await apply_batches(pool, projections, first + other)  # redelivered

    assert applied == {p.name: 5 for p in projections}
    assert again == {p.name: 0 for p in projections}
    for p in projections:
        assert await _positions(pool, p.name) == {
            "team-a": first[-1].position,
            "team-b": other[-1].position,
        }


class _Broken:
    name = "broken"
    lock: int | None = None

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None:
        raise RuntimeError("cannot apply")


async def test_a_read_model_that_fails_leaves_the_others_unwritten(
    pool: asyncpg.Pool[Any],
) -> None:
    batch = await goals_appended(pool, "team-c", 2)

    with pytest.raises(RuntimeError, match="cannot apply"):
        await apply_batches(pool, [TeamActivity(), _Broken()], batch)

    assert await _positions(pool, TeamActivity.name) == {}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM team_activity") == 0
    assert await apply_batches(pool, [TeamActivity()], batch) == {TeamActivity.name: 2}


@pytest.mark.parametrize("together", [True, False], ids=["one-statement", "saved-then-queued"])
async def test_a_batch_of_tasks_is_saved_whole_and_its_notices_queued_in_order(
    pool: asyncpg.Pool[Any], together: bool
) -> None:
    now = datetime.now(UTC)
    tags = [(), (Sensitivity.GENETIC,), (Sensitivity.MENTAL_HEALTH, Sensitivity.SUBSTANCE_USE)]
    tasks = [
        Task(
            id=f"t-{n}",
            team_id="team-s",
            title=f'Call "back" \\ {n}',
            source="manual",
            updated_at=now,
            patient_id="p-1" if n else None,
            due_date=date(2030, 1, n + 1),
            sensitivity=tags[n],
            status=TaskStatus.BLOCKED if n == 2 else TaskStatus.TODO,
            blocked_reason="waiting" if n == 2 else None,
            signal_count=n,
            urgent_since=now if n == 1 else None,
        )
        for n in range(3)
    ]
    notices = [
        Notice("team-s", "task", BoardChange.UPDATED, task=t, position=10 + n)
        for n, t in enumerate(tasks)
    ]
    notices.insert(1, Notice("team-s", "roster"))  # queued, not logged

    async with pool.acquire() as conn, conn.transaction():
        if together:  # the tasks and the notices in one statement
            await store.save(conn, Board(tasks={t.id: t for t in tasks}), notices)
        else:
            await store.save(conn, Board(tasks={t.id: t for t in tasks}))
        await store.save(conn, Board(tasks={"t-0": dataclasses.replace(tasks[0], title="New")}))
        if not together:
            await store.enqueue(conn, notices)
        loaded = await store.load(
            conn, Wanted(frozenset(t.id for t in tasks), frozenset(), frozenset())
        )
        queued = [q.update() for q in await store.take_outbox(conn, 10)]
    async with pool.acquire() as conn:
        logged = await store.changes_after(conn, "team-s", 0, limit=10)

    assert loaded.tasks == {
        t.id: dataclasses.replace(t, created_at=now, title="New" if t.id == "t-0" else t.title)
        for t in tasks
    }
    assert [(u.kind, u.task.task_id if u.task else None) for u in queued] == [
        ("task", "t-0"),
        ("roster", None),
        ("task", "t-1"),
        ("task", "t-2"),
    ]
    assert [u.position for u in logged.updates] == [10, 11, 12]


async def test_a_position_another_worker_makes_meanwhile_is_read_and_not_applied_again(
    pool: asyncpg.Pool[Any],
) -> None:
    """Two workers overlapping in a rebalance: the other one makes the team's position row
    while this batch's statement runs (after its snapshot), and commits having applied the
    batch. This batch must read that position and apply nothing twice."""
    batch = await goals_appended(pool, "team-r", 3)
    activity = TeamActivity()
    async with pool.acquire() as other, other.transaction():
        # The other worker's transaction: it has made the row (uncommitted) and applied
        # the batch; ours starts now and waits on that row.
        await apply_batches_on(other, activity, batch)
        ours = asyncio.ensure_future(apply_batches(pool, [activity], batch))
        await _waiting_on_a_lock(pool)
    assert await ours == {activity.name: 0}
    assert await _positions(pool, activity.name) == {"team-r": batch[-1].position}
    async with pool.acquire() as conn:
        applied = await conn.fetchval(
            "SELECT events_applied FROM team_activity WHERE team_id = 'team-r'"
        )
    assert applied == 3


async def apply_batches_on(conn: Conn, projection: TeamActivity, batch: list[Positioned]) -> None:
    """What apply_batches writes for a team's first batch, on a connection whose
    transaction the caller holds open."""
    await conn.execute(
        "INSERT INTO projection_positions (projection, team_id, position) VALUES ($1, $2, $3)",
        projection.name,
        batch[0].envelope.team_id,
        batch[-1].position,
    )
    await projection.apply(conn, batch)


async def _waiting_on_a_lock(pool: asyncpg.Pool[Any]) -> None:
    for _ in range(500):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batch never waited on the other transaction's row")


async def test_the_publisher_sends_the_whole_outbox_and_stops_at_a_short_take(
    pool: asyncpg.Pool[Any], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Takes of 3: seven queued changes go in takes of 3, 3 and 1, and the short take
    ends the flush (a change committed after it is followed by a kick of its own)."""
    monkeypatch.setattr(publisher, "_BATCH", 3)
    takes: list[int] = []
    take = store.take_outbox

    async def counted(conn: Conn, limit: int) -> list[Any]:
        updates = await take(conn, limit)
        takes.append(len(updates))
        return updates

    monkeypatch.setattr(store, "take_outbox", counted)
    async with pool.acquire() as conn:
        await store.enqueue(conn, [Notice("team-p", "roster") for _ in range(7)])
    await kafka.ensure_topics(settings, [settings.board_updates_topic])
    producer = kafka.make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        sender = publisher.BoardPublisher(
            pool, producer, settings.board_updates_topic, pipeline_keys(settings)
        )
        assert await sender.flush() == 7
    finally:
        await producer.stop()

    assert takes == [3, 3, 1]
    assert await pool.fetchval("SELECT count(*) FROM board_outbox") == 0
    assert len(await read_to_end(settings, settings.board_updates_topic)) == 7


async def test_a_lone_task_event_is_applied_in_seven_round_trips(database_url: str) -> None:
    """Each round trip is a wake-up of the server and of the worker, on the path of every
    push: BEGIN goes with the read models' locks, and the board writes its tasks and queues
    their notices in one statement."""
    one = await db.create_pool(database_url, min_size=1, max_size=1)  # so, one connection
    try:
        events = EventStore(one)
        created = await events.append("task-t-1", 0, [task_created("t-1", team_id="team-q")])
        await apply_batches(one, default_projections(), [_positioned(created)])
        done = task_moved("t-1", team_id="team-q", status=TaskStatus.DONE, previous=TaskStatus.TODO)
        moved = await events.append("task-t-1", 1, [done])
        sent: list[str] = []
        async with one.acquire() as conn:
            conn.add_query_logger(lambda q: sent.append(q.query.split(maxsplit=1)[0]))
        applied = await apply_batches(one, default_projections(), [_positioned(moved)])
    finally:
        await one.close()

    assert applied["board"] == 1
    # BEGIN with the locks; the positions made and locked; the task read; the task and its
    # notice; the team's activity; the positions moved; COMMIT.
    assert sent == ["BEGIN;", "WITH", "SELECT", "WITH", "INSERT", "INSERT", "COMMIT"]


def _positioned(recorded: Sequence[Any]) -> Positioned:
    (event,) = recorded
    return Positioned(event.position, event.envelope)
