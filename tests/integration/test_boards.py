"""The board projection end to end (a real broker, a real PostgreSQL, the worker as its own
process): exactly once in effect per team position, poison to the DLQ, a broker that lost
its log, a worker killed mid-stream, `carecoord rebuild --check`, and the overdue timer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schemas import codec
from schemas.board import BoardChange, BoardUpdate
from schemas.common import PlanStatus, Sensitivity, TaskStatus
from services.common import kafka
from services.common.event_store import EventStore, NewEvent, RecordedEvent, StreamWrite
from services.common.outbox import OutboxRelay
from services.common.projection import ERROR_HEADER, Positioned, apply_batch
from services.settings import Settings
from services.tasks import rebuild
from services.tasks import store as board_store
from services.tasks.domain import Task
from services.tasks.projector import Board, HuddleSlot, PlanSchedule, Wanted
from services.tasks.store import TASK_COLUMNS, BoardProjection
from tests.conftest import Broker, wait_until
from tests.factories import task_created, task_moved
from tests.integration.kafka_helpers import produce, read_to_end
from tests.integration.workers import Workers

# Each task's life in the stream tests: created (TODO), then these moves in order.
MOVES = (TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED, TaskStatus.IN_PROGRESS, TaskStatus.DONE)
BOARD_COLUMNS = TASK_COLUMNS


@contextlib.asynccontextmanager
async def relaying(settings: Settings, pool: asyncpg.Pool[Any]) -> AsyncIterator[OutboxRelay]:
    """The outbox relay, in this process, for the length of the block."""
    stop = asyncio.Event()
    relay = OutboxRelay(settings=settings, pool=pool)
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await task


async def carecoord(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run the `carecoord` command on the test's database: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env={**os.environ, "CARECOORD_DATABASE_URL": settings.database_url or ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- events and what the board made of them ------------------------------------------


def new_team() -> str:
    return f"team-{uuid.uuid4().hex[:8]}"


def message(recorded: RecordedEvent, *, key: str | None = None) -> tuple[bytes, bytes, int]:
    """A recorded event as the relay sends it: keyed by team, stamped with its position."""
    env = recorded.envelope
    return (key or env.team_id).encode(), codec.encode(env), recorded.position


def task_rounds(teams: list[str], tasks_per_team: int) -> list[list[tuple[str, NewEvent]]]:
    """(stream, event) to append, round by round: every task created, then each round
    moves every task once more (MOVES), so each round touches a stream once."""
    tasks = [(team, str(uuid.uuid4())) for team in teams for _ in range(tasks_per_team)]
    rounds = [[(f"task-{t}", task_created(t, team_id=team)) for team, t in tasks]]
    previous = TaskStatus.TODO
    for status in MOVES:
        reason = "waiting for the lab" if status is TaskStatus.BLOCKED else None
        rounds.append(
            [
                (
                    f"task-{t}",
                    task_moved(t, team_id=team, status=status, previous=previous, reason=reason),
                )
                for team, t in tasks
            ]
        )
        previous = status
    return rounds


@dataclass
class Appender:
    """Appends rounds of events in small transactions, pausing between them, so that
    the relay and the worker see a stream of events rather than one block."""

    store: EventStore
    chunk: int
    pause: float
    appended: int = 0

    async def append(self, rounds: list[list[tuple[str, NewEvent]]]) -> None:
        for events in rounds:
            for start in range(0, len(events), self.chunk):
                part = events[start : start + self.chunk]
                await self.store.append_many(
                    [StreamWrite(stream, None, [event]) for stream, event in part]
                )
                self.appended += len(part)
                await asyncio.sleep(self.pause)


async def board_position(pool: asyncpg.Pool[Any], team: str) -> int:
    value = await pool.fetchval(
        "SELECT position FROM projection_positions WHERE projection = 'board' AND team_id = $1",
        team,
    )
    return int(value or 0)


async def lagging_teams(pool: asyncpg.Pool[Any]) -> dict[str, tuple[int, int]]:
    """Teams whose board is not at their last store position: team -> (board, store)."""
    rows = await pool.fetch(
        """
        SELECT e.team_id, max(e.position) AS head, coalesce(max(p.position), 0) AS board
        FROM events e LEFT JOIN projection_positions p
          ON p.projection = 'board' AND p.team_id = e.team_id
        GROUP BY e.team_id
        """
    )
    return {r["team_id"]: (r["board"], r["head"]) for r in rows if r["board"] != r["head"]}


async def events_applied(pool: asyncpg.Pool[Any]) -> int:
    """How many store events the boards reflect (all events up to each team's position)."""
    value = await pool.fetchval(
        """
        SELECT count(*) FROM events e JOIN projection_positions p
          ON p.projection = 'board' AND p.team_id = e.team_id
        WHERE e.position <= p.position
        """
    )
    return int(value)


async def board_rows(pool: asyncpg.Pool[Any]) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT {BOARD_COLUMNS} FROM board_tasks ORDER BY task_id")
    return [dict(r) for r in rows]


async def outbox_empty(pool: asyncpg.Pool[Any]) -> bool:
    return bool(await pool.fetchval("SELECT count(*) = 0 FROM board_outbox"))


async def board_updates(settings: Settings, pool: asyncpg.Pool[Any]) -> list[BoardUpdate]:
    """Everything on care.board-updates, once the worker has published all it queued."""
    await wait_until(lambda: outbox_empty(pool), what="the board outbox to be published")
    return [
        codec.decode_board_update(m.value)
        for m in await read_to_end(settings, settings.board_updates_topic)
    ]


def task_changes(updates: list[BoardUpdate], task_id: str) -> list[BoardChange | None]:
    return [u.change for u in updates if u.task is not None and u.task.task_id == task_id]


# --- the tests -----------------------------------------------------------------------


async def test_the_same_message_delivered_twice_changes_the_board_once(
    settings: Settings, pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    team, task = new_team(), str(uuid.uuid4())
    created, moved = await store.append(
        f"task-{task}",
        0,
        [
            task_created(task, team_id=team),
            task_moved(task, team_id=team, status=TaskStatus.IN_PROGRESS, previous=TaskStatus.TODO),
        ],
    )
    # Another team's event, sent under this team's key: it queues on the same partition
    # behind the late duplicates, so once it is applied they have been handled too.
    marker_team, marker_task = new_team(), str(uuid.uuid4())
    [marker] = await store.append(
        f"task-{marker_task}", 0, [task_created(marker_task, team_id=marker_team)]
    )
    worker = workers.start(settings)

    # Redelivered within what is likely one batch...
    await produce(
        settings, settings.events_topic, [message(created), message(moved), message(moved)]
    )

    async def moved_applied() -> bool:
        worker.assert_alive()
        return await board_position(pool, team) >= moved.position

    await wait_until(moved_applied, seconds=45, what="the worker to apply the move")
    # ...and again after the board recorded them, in later batches.
    await produce(
        settings,
        settings.events_topic,
        [message(created), message(moved), message(marker, key=team)],
    )

    async def marker_applied() -> bool:
        worker.assert_alive()
        return await board_position(pool, marker_team) == marker.position

    await wait_until(marker_applied, seconds=30, what="the worker to reach the marker")

    row = await pool.fetchrow("SELECT status FROM board_tasks WHERE task_id = $1", task)
    assert row is not None and row["status"] == TaskStatus.IN_PROGRESS.value
    assert await board_position(pool, team) == moved.position
    updates = await board_updates(settings, pool)
    assert Counter(task_changes(updates, task)) == {BoardChange.CREATED: 1, BoardChange.MOVED: 1}
    [moved_update] = [u for u in updates if u.task and u.change is BoardChange.MOVED]
    assert moved_update.task is not None and moved_update.task.status is TaskStatus.IN_PROGRESS


async def test_poison_messages_go_to_the_dlq_with_the_reason_and_the_next_good_one_is_applied(
    settings: Settings, pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    team, orphan, good = new_team(), str(uuid.uuid4()), str(uuid.uuid4())
    [never_created] = await store.append(
        f"task-{orphan}",
        0,
        [task_moved(orphan, team_id=team, status=TaskStatus.DONE, previous=TaskStatus.TODO)],
    )
    [created] = await store.append(f"task-{good}", 0, [task_created(good, team_id=team)])
    worker = workers.start(settings)

    await produce(
        settings,
        settings.events_topic,
        [
            (team.encode(), b"{not json", never_created.position),
            message(never_created),
            message(created),
        ],
    )

    async def good_applied() -> bool:
        worker.assert_alive()
        return await board_position(pool, team) == created.position

    await wait_until(good_applied, seconds=45, what="the good message after the poison")
    assert await pool.fetchval("SELECT status FROM board_tasks WHERE task_id = $1", good) == "TODO"
    assert await pool.fetchval("SELECT count(*) FROM board_tasks WHERE task_id = $1", orphan) == 0

    async def dead_lettered() -> list[Any]:
        found = await read_to_end(settings, settings.dlq_topic)
        return found if len(found) >= 2 else []

    await wait_until(dead_lettered, seconds=20, what="two messages on the DLQ")
    dead = await read_to_end(settings, settings.dlq_topic)
    assert sorted(m.value for m in dead) == sorted(
        [b"{not json", codec.encode(never_created.envelope)]
    )
    reasons = {m.value: m.headers[ERROR_HEADER].decode() for m in dead}
    assert "MalformedMessage" in reasons[b"{not json"]
    assert "TaskMoved before TaskCreated" in reasons[codec.encode(never_created.envelope)]
    assert all(m.key == team.encode() for m in dead)
    worker.assert_alive()


async def test_boards_reach_the_store_head_and_match_a_rebuild_after_the_broker_restarts_empty(
    settings: Settings, pool: asyncpg.Pool[Any], own_broker: Broker, workers: Workers
) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})
    await kafka.ensure_topics(settings)
    teams = [new_team() for _ in range(5)]
    rounds = task_rounds(teams, tasks_per_team=12)  # 60 tasks, 300 events
    appender = Appender(EventStore(pool), chunk=4, pause=0.02)
    worker = workers.start(settings)
    async with relaying(settings, pool):
        await appender.append(rounds[:1])

        async def worker_applying() -> bool:
            worker.assert_alive()
            return await events_applied(pool) > 0

        await wait_until(worker_applying, seconds=45, what="the worker to apply something")
        # Slower now, so that events still flow after the broker is back: Tansu serves
        # on for about 5 s after it is told to stop while clients are connected.
        appender.chunk, appender.pause = 1, 0.05
        rest = asyncio.create_task(appender.append(rounds[1:]))
        await wait_until(lambda: appender.appended >= 90, what="more events to flow")
        before = await events_applied(pool)
        restarting = time.monotonic()
        # In a thread, so that appends (and the relay's retries) go on during the outage.
        await asyncio.to_thread(own_broker.restart_empty)
        assert not rest.done(), "events must still be flowing when the broker is back"
        await rest
        assert appender.appended == 300

        async def caught_up() -> bool:
            worker.assert_alive()
            return not await lagging_teams(pool)

        await wait_until(caught_up, seconds=60, what="every team's board to reach its head")
        recovered = time.monotonic() - restarting
        # The worker's board publisher got through to the new broker too.
        await wait_until(lambda: outbox_empty(pool), what="the board outbox to be published")
    print(f"{before} events applied when the restart began; all {recovered:.1f} s after")

    checked = await rebuild.check(pool)
    assert checked.differences == {}
    assert checked.ok and checked.behind == 0
    code, out, err = await carecoord(settings, "rebuild", "--check")
    assert (code, "OK" in out) == (0, True), out + err
    assert await pool.fetchval("SELECT count(*) FROM board_tasks WHERE status = 'DONE'") == 60


async def test_a_worker_killed_mid_stream_and_restarted_ends_with_boards_equal_to_a_rebuild(
    settings: Settings, pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    teams = [new_team() for _ in range(20)]
    rounds = task_rounds(teams, tasks_per_team=20)  # 400 tasks, 2,000 events
    total = sum(len(r) for r in rounds)
    appender = Appender(EventStore(pool), chunk=10, pause=0.02)
    first = workers.start(settings)
    async with relaying(settings, pool):
        await appender.append(rounds[:1])

        async def first_applying() -> bool:
            first.assert_alive()
            return await events_applied(pool) > 0

        await wait_until(first_applying, seconds=45, what="the first worker to apply something")
        rest = asyncio.create_task(appender.append(rounds[1:]))
        await wait_until(lambda: appender.appended >= 1000, what="half the events appended")
        first.kill()
        at_kill = await events_applied(pool)
        assert not rest.done(), "the worker must be killed while events still flow"
        assert 0 < at_kill < total

        second = workers.start(settings)
        await rest

        async def caught_up() -> bool:
            second.assert_alive()
            return not await lagging_teams(pool)

        await wait_until(caught_up, seconds=60, what="the new worker to reach every team's head")
    print(f"killed the first worker with {at_kill} of {total} events applied")

    # Every board change reached care.board-updates at least once, the kill
    # notwithstanding (each event gives its task a distinct updated_at).
    updates = await board_updates(settings, pool)
    assert len({(u.task.task_id, u.task.updated_at) for u in updates if u.task}) == total

    code, out, err = await carecoord(settings, "rebuild", "--check")
    assert (code, "OK" in out) == (0, True), out + err
    live = await board_rows(pool)
    second.stop()
    await rebuild.rebuild(pool)
    assert await board_rows(pool) == live
    assert len(live) == 400
    assert {r["status"] for r in live} == {TaskStatus.DONE.value}


async def test_rebuild_check_names_a_tampered_task_by_id_and_never_prints_its_title(
    settings: Settings, pool: asyncpg.Pool[Any]
) -> None:
    store = EventStore(pool)
    team = new_team()
    titles = {
        str(uuid.uuid4()): title
        for title in (
            "Discuss HIV test result with Jane Roe",
            "Refer John Doe to the opioid treatment programme",
            "Book BRCA1 counselling for Mary Major",
        )
    }
    for task_id, title in titles.items():
        await store.append(f"task-{task_id}", 0, [task_created(task_id, team_id=team, title=title)])
    tampered = next(iter(titles))
    await store.append(
        f"task-{tampered}",
        1,
        [
            task_moved(
                tampered, team_id=team, status=TaskStatus.IN_PROGRESS, previous=TaskStatus.TODO
            )
        ],
    )
    # Project the way the worker does, in this process.
    items = [Positioned(r.position, r.envelope) for r in await store.read_all(0)]
    assert await apply_batch(pool, BoardProjection(), items) == len(items)
    code, out, err = await carecoord(settings, "rebuild", "--check")
    assert (code, "OK" in out) == (0, True), out + err

    await pool.execute("UPDATE board_tasks SET status = 'DONE' WHERE task_id = $1", tampered)
    code, out, err = await carecoord(settings, "rebuild", "--check")

    assert code == 1, out + err
    assert tampered in out
    assert "board_tasks: 1 row(s) differ" in out
    assert "DIFFERENT" in err
    for title in titles.values():
        assert title not in out + err
    checked = await rebuild.check(pool)
    assert checked.differences == {"board_tasks": (1, [tampered])}


async def test_the_overdue_timer_announces_a_newly_overdue_task_once_and_never_a_done_one(
    settings: Settings, pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    team, overdue, done = new_team(), str(uuid.uuid4()), str(uuid.uuid4())
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).date()
    [created] = await store.append(
        f"task-{overdue}", 0, [task_created(overdue, team_id=team, due_date=three_days_ago)]
    )
    finished = await store.append(
        f"task-{done}",
        0,
        [
            task_created(done, team_id=team, due_date=three_days_ago),
            task_moved(done, team_id=team, status=TaskStatus.DONE, previous=TaskStatus.TODO),
        ],
    )
    # Sent (in store order, as the relay does) before the worker starts, so the done
    # task's creation and move reach it in one fetch and one batch: it is never an open
    # overdue task on the board.
    await produce(settings, settings.events_topic, [message(r) for r in [created, *finished]])
    period = 0.5
    worker = workers.start(settings, CARECOORD_OVERDUE_CHECK_SECONDS=str(period))

    async def announced() -> bool:
        worker.assert_alive()
        return bool(
            await pool.fetchval(
                "SELECT overdue_announced FROM board_tasks WHERE task_id = $1", overdue
            )
        )

    await wait_until(announced, seconds=45, what="the overdue task to be announced")
    await asyncio.sleep(6 * period)  # several more looks by the timer
    worker.assert_alive()

    assert await board_position(pool, team) == finished[-1].position
    assert (
        await pool.fetchval("SELECT overdue_announced FROM board_tasks WHERE task_id = $1", done)
        is False
    )
    updates = await board_updates(settings, pool)
    assert task_changes(updates, overdue) == [BoardChange.CREATED, BoardChange.UPDATED]
    assert task_changes(updates, done) == [BoardChange.CREATED, BoardChange.MOVED]
    [update] = [u for u in updates if u.change is BoardChange.UPDATED]
    assert update.task is not None
    assert (update.task.status, update.task.due_date) == (TaskStatus.TODO, three_days_ago)


async def test_a_rebuild_in_small_batches_read_ahead_leaves_the_boards_of_one_batch(
    pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild reads each next batch while it applies the last: in batches of two it
    must apply every event once, in order, and leave what one batch of all of them does."""
    store = EventStore(pool)
    team = new_team()
    tasks = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in tasks:
        await store.append(f"task-{task_id}", 0, [task_created(task_id, team_id=team)])
    for version, (status, previous) in enumerate(
        [(TaskStatus.IN_PROGRESS, TaskStatus.TODO), (TaskStatus.DONE, TaskStatus.IN_PROGRESS)], 1
    ):
        for task_id in tasks[:2]:
            moved = task_moved(task_id, team_id=team, status=status, previous=previous)
            await store.append(f"task-{task_id}", version, [moved])
    head = await store.head()

    async def boards() -> list[tuple[Any, ...]]:
        rows = await pool.fetch(
            "SELECT task_id, status, updated_at FROM board_tasks WHERE team_id = $1 "
            "ORDER BY task_id",
            team,
        )
        return [tuple(r) for r in rows]

    whole = await rebuild.rebuild(pool)
    expected = await boards()
    monkeypatch.setattr(rebuild, "_BATCH", 2)
    batched = await rebuild.rebuild(pool)

    assert (batched.events, batched.applied) == (whole.events, whole.applied) == (head, head)
    assert await boards() == expected
    assert sorted(status for _, status, _ in expected) == ["DONE", "DONE", "TODO"]
    assert (await rebuild.check(pool)).ok


async def test_a_rebuild_remembers_what_it_wrote_and_reads_the_tables_only_past_its_limit(
    pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild starts from empty tables, so what a batch touches is what earlier batches
    wrote: it keeps that and reads no board rows. Past REMEMBERED records it reads the
    tables again, and the boards come out the same."""
    store = EventStore(pool)
    team = new_team()
    for stream, event in (pair for batch in task_rounds([team], 3) for pair in batch):
        await store.append(stream, None, [event])
    loads: list[Any] = []
    real_load = board_store.load

    async def counted(conn: Any, wanted: Any) -> Any:
        loads.append(wanted)
        return await real_load(conn, wanted)

    monkeypatch.setattr(board_store, "load", counted)
    monkeypatch.setattr(rebuild, "_BATCH", 2)  # every task's events over several batches

    remembered = await rebuild.rebuild(pool)
    expected = await board_rows(pool)
    assert loads == []
    assert (await rebuild.check(pool)).ok
    assert loads == []  # the check rebuilds into empty temporary tables alike

    monkeypatch.setattr(board_store, "REMEMBERED", 2)
    reread = await rebuild.rebuild(pool)
    assert loads, "past the limit, batches read the tables"
    assert (reread.events, reread.applied) == (remembered.events, remembered.applied)
    assert await board_rows(pool) == expected
    assert [row["status"] for row in expected] == ["DONE"] * 3
    assert (await rebuild.check(pool)).ok


async def test_an_event_refused_in_a_remembered_batch_leaves_the_others_applied(
    pool: asyncpg.Pool[Any],
) -> None:
    """A batch with an event the projector refuses is applied again one event at a time,
    each remembered once written: the task made before the refusal is there for the move
    after it, and each of the two is told once."""
    store = EventStore(pool)
    team = new_team()
    kept, stray = str(uuid.uuid4()), str(uuid.uuid4())
    await store.append(f"task-{kept}", 0, [task_created(kept, team_id=team)])
    moved = task_moved(stray, team_id=team, status=TaskStatus.IN_PROGRESS, previous=TaskStatus.TODO)
    [refused] = await store.append(f"task-{stray}", 0, [moved])
    done = task_moved(kept, team_id=team, status=TaskStatus.DONE, previous=TaskStatus.TODO)
    await store.append(f"task-{kept}", 1, [done])

    result = await rebuild.rebuild(pool)

    assert [position for position, _ in result.refused] == [refused.position]
    assert result.refused[0][1].startswith("ValueError")
    assert (result.events, result.applied) == (3, 2)
    rows = await pool.fetch("SELECT task_id, status FROM board_tasks WHERE team_id = $1", team)
    assert [tuple(r) for r in rows] == [(kept, "DONE")]
    changes = await pool.fetch(
        "SELECT position FROM board_changes WHERE team_id = $1 ORDER BY position", team
    )
    assert [r["position"] for r in changes] == [1, 3]  # one notice each, none twice
    assert (await rebuild.check(pool)).ok


async def test_what_a_remembering_batch_recalls_is_what_it_would_load(
    pool: asyncpg.Pool[Any],
) -> None:
    """recall answers from memory what load reads from the tables holding the same
    records: by id (unknown ids left out), and a consent change's sensitive cards of the
    patient (not the patient's other cards, not another patient's)."""
    now = datetime.now(UTC)
    team = new_team()
    shapes = [
        ("patient-1", (Sensitivity.GENETIC,)),
        ("patient-1", ()),
        ("patient-2", (Sensitivity.GENETIC,)),
        (None, ()),
    ]
    tasks = [
        Task(
            id=str(uuid.uuid4()),
            team_id=team,
            title="Review family history",
            source="manual",
            updated_at=now,
            created_at=now,
            patient_id=patient,
            sensitivity=tags,
        )
        for patient, tags in shapes
    ]
    plan = PlanSchedule("plan-1", team, "patient-1", PlanStatus.ACTIVE)
    huddle = HuddleSlot("huddle-1", team, "SCHEDULED", now)
    written = Board(
        tasks={t.id: t for t in tasks}, plans={"plan-1": plan}, huddles={"huddle-1": huddle}
    )
    wanted = Wanted(
        task_ids=frozenset({tasks[3].id, "no-such-task"}),
        plan_ids=frozenset({"plan-1", "no-such-plan"}),
        huddle_ids=frozenset({"huddle-1", "no-such-huddle"}),
        patient_ids=frozenset({"patient-1"}),
    )
    async with pool.acquire() as conn:
        await board_store.save(conn, written)
        loaded = await board_store.load(conn, wanted)

    assert board_store.recall(written, wanted) == loaded
    assert set(loaded.tasks) == {tasks[0].id, tasks[3].id}
    assert (set(loaded.plans), set(loaded.huddles)) == ({"plan-1"}, {"huddle-1"})


async def test_a_rebuild_looks_for_cycles_rarely_while_it_applies_and_not_after(
    pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore(pool)
    task_id = str(uuid.uuid4())
    await store.append(f"task-{task_id}", 0, [task_created(task_id, team_id=new_team())])
    seen: list[tuple[int, int, int]] = []
    real_save = board_store.save

    async def watched(conn: Any, board: Any, notices: Any = ()) -> None:
        seen.append(gc.get_threshold())
        await real_save(conn, board, notices)

    monkeypatch.setattr(board_store, "save", watched)
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's defaults (an API made in this process raises them)
    try:
        await rebuild.rebuild(pool)
        after = gc.get_threshold()
    finally:
        gc.set_threshold(*before)

    assert seen == [rebuild._COLLECT_AFTER]
    assert after == (700, 10, 10)
