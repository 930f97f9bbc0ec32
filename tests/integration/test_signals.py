"""Care signals end to end (a real broker, a real PostgreSQL, the worker as its own
process): readings out of range become exactly the signal tasks of a clean run whatever
happens on the way (a duplicate or replayed observation, a rebuild, a worker killed
mid-stream, a broker restarted empty); poison goes to the DLQ; the escalation and silence
timers act once with two workers; `carecoord rebuild --check` covers the signals model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from schemas import codec
from schemas.careplan import CarePlanCreated, MonitoringAdded, PlanStatusChanged
from schemas.common import Discipline, PlanStatus
from schemas.signal import SignalRaised, SignalStatus
from schemas.task import TaskEscalated
from services.common import db, db_roles, kafka
from services.common.event_store import EventStore, NewEvent
from services.common.projection import ERROR_HEADER, Positioned, apply_batch
from services.settings import Settings
from services.tasks import monitoring_store, rebuild, signal_side
from services.tasks.signal_aggregate import RaiseSignal, Reading, signal_task_id
from services.tasks.store import BoardProjection
from services.tasks.write_side import build_handler
from tests.conftest import TEST_APP_PASSWORD, Broker, _with_database, wait_until
from tests.integration.kafka_helpers import produce, read_to_end
from tests.integration.signals import (
    Watched,
    append_rounds,
    clean_run,
    lagging,
    monitored_patients,
    observation,
    reading_rounds,
    settled,
    signal_streams,
    signal_tasks,
)
from tests.integration.test_boards import carecoord, relaying
from tests.integration.workers import Workers


@pytest.fixture
async def fresh_pool(pg_admin_dsn: str, template_database: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    """A second, empty database (the services' role): where a clean run goes."""
    name = f"carecoord_clean_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        url = db_roles.with_role(
            _with_database(pg_admin_dsn, name), db_roles.APP_ROLE, TEST_APP_PASSWORD
        )
        pool = await db.create_pool(url, min_size=1, max_size=10)
        try:
            yield pool
        finally:
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def wait_settled(pool: asyncpg.Pool[Any], workers: Workers, seconds: float = 60) -> None:
    async def done() -> bool:
        for w in workers.started:
            if w.proc.poll() is None:
                w.assert_alive()
        return await settled(pool) and await settled(pool)

    await wait_until(done, seconds=seconds, what="the signals to settle")


async def assert_same_as_a_clean_run(
    pool: asyncpg.Pool[Any], fresh: asyncpg.Pool[Any], *, expected: int
) -> list[dict[str, Any]]:
    live = await signal_tasks(pool)
    await clean_run(pool, fresh)
    assert live == await signal_tasks(fresh)
    assert await signal_streams(pool) == await signal_streams(fresh)
    assert len(live) == expected
    return live


# --- the tests -----------------------------------------------------------------------


async def test_duplicate_and_replayed_observations_and_a_rebuild_leave_the_tasks_of_a_clean_run(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    fresh_pool: asyncpg.Pool[Any],
    workers: Workers,
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    watched = await monitored_patients(build_handler(store), teams=1, per_team=2, unit="mmol/L")
    rounds = reading_rounds(watched, per_plan=6)
    worker = workers.start(settings)
    async with relaying(settings, pool):
        await append_rounds(store, rounds)
        await wait_settled(pool, workers)
        before = await signal_tasks(pool)
        assert before and all(t["status"] == "TODO" for t in before)

        # The same observations again on care.events: at their positions (a redelivery),
        # keyed by team as the relay keys them.
        readings = [
            r for r in await store.read_all(0, 10_000) if r.envelope.type == "ObservationRecorded"
        ]
        again = [
            (r.envelope.team_id.encode(), codec.encode(r.envelope), r.position) for r in readings
        ]
        await produce(settings, settings.events_topic, again + again[:3])
        await asyncio.sleep(1.5)  # the worker fetches every ~10 ms; let it see them all
        await wait_settled(pool, workers)
        worker.assert_alive()
        assert await signal_tasks(pool) == before

        # A rebuild replays every observation: it sends nothing again.
        await rebuild.rebuild(pool)
        assert await pool.fetchval("SELECT count(*) FROM signal_outbox") == 0
        await wait_settled(pool, workers)
        assert await signal_tasks(pool) == before

    checked = await rebuild.check(pool)
    assert checked.ok and checked.behind == 0, checked.differences
    code, out, err = await carecoord(settings, "rebuild", "--check")
    assert (code, "OK" in out) == (0, True), out + err

    # Two patients, each with one open task: 2 of the first 6 values are in range.
    live = await assert_same_as_a_clean_run(pool, fresh_pool, expected=2)
    assert {t["signal_count"] for t in live} == {4}
    assert all(t["urgent"] and t["discipline"] == "NURSE" for t in live)
    assert all("mmol/L" in t["title"] and "signals)" in t["title"] for t in live)

    # A tampered watch row is a difference `rebuild --check` names by id.
    tampered = watched[0].monitoring_id
    await admin_pool.execute(
        "UPDATE signal_watches SET high = 99 WHERE monitoring_id = $1", tampered
    )
    checked = await rebuild.check(pool)
    assert checked.differences == {"signal_watches": (1, [tampered])}
    code, out, err = await carecoord(settings, "rebuild", "--check")
    assert code == 1 and "signal_watches: 1 row(s) differ" in out and tampered in out, out + err


async def test_a_worker_killed_mid_stream_ends_with_the_signal_tasks_of_a_clean_run(
    settings: Settings, pool: asyncpg.Pool[Any], fresh_pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    watched = await monitored_patients(build_handler(store), teams=3, per_team=2)
    rounds = reading_rounds(watched, per_plan=60)  # 360 readings
    first = workers.start(settings)
    async with relaying(settings, pool):
        await append_rounds(store, rounds[:2])

        async def signalled() -> bool:
            first.assert_alive()
            return bool(
                await pool.fetchval("SELECT count(*) FROM board_tasks WHERE source = 'signal'")
            )

        await wait_until(signalled, seconds=45, what="the first signal task")
        progress: list[int] = []
        appending = asyncio.create_task(
            append_slowly(store, rounds[2:], pause=0.05, progress=progress)
        )
        await wait_until(lambda: len(progress) >= 15, what="readings to flow")
        first.kill()
        assert not appending.done(), "the worker must be killed while readings still flow"
        workers.start(settings)
        await appending
        await wait_settled(pool, workers)

    await assert_same_as_a_clean_run(pool, fresh_pool, expected=len(watched))


async def test_a_broker_restarted_empty_ends_with_the_signal_tasks_of_a_clean_run(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    fresh_pool: asyncpg.Pool[Any],
    own_broker: Broker,
    workers: Workers,
) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    watched = await monitored_patients(build_handler(store), teams=2, per_team=2)
    rounds = reading_rounds(watched, per_plan=30)
    worker = workers.start(settings)
    async with relaying(settings, pool):
        await append_rounds(store, rounds[:5])

        async def signalled() -> bool:
            worker.assert_alive()
            return bool(
                await pool.fetchval("SELECT count(*) FROM board_tasks WHERE source = 'signal'")
            )

        await wait_until(signalled, seconds=45, what="the first signal task")
        # Readings go on while the broker restarts, and after it is back (however long the
        # restart takes on a busy machine).
        appending = asyncio.create_task(append_slowly(store, rounds[5:15], pause=0.2))
        await asyncio.to_thread(own_broker.restart_empty)
        await appending
        await append_slowly(store, rounds[15:], pause=0.05)
        await wait_settled(pool, workers, seconds=90)

    await assert_same_as_a_clean_run(pool, fresh_pool, expected=len(watched))


async def test_poison_goes_to_the_dlq_and_the_next_good_reading_is_signalled(
    settings: Settings, pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    [w] = await monitored_patients(build_handler(store), teams=1, per_team=1)
    # A signal of a monitoring plan the read model has never seen: it cannot be applied.
    [orphan] = await store.append(
        f"signal-{uuid.uuid4()}",
        0,
        [
            NewEvent(
                event=SignalRaised(
                    monitoring_id=str(uuid.uuid4()),
                    plan_id=w.plan_id,
                    patient_id=w.patient_id,
                    task_id=str(uuid.uuid4()),
                    status=SignalStatus.OUT_OF_RANGE,
                    count=1,
                ),
                team_id=w.team_id,
                actor_id="someone",
                patient_id=w.patient_id,
            )
        ],
    )
    stream, event = observation(w, 260, at=datetime.now(UTC) - timedelta(minutes=5))
    [good] = await store.append(stream, 0, [event])
    setup = [r for r in await store.read_all(0, 10_000) if r.position < orphan.position]
    worker = workers.start(settings)
    key = w.team_id.encode()
    await produce(
        settings,
        settings.events_topic,
        [(key, codec.encode(r.envelope), r.position) for r in setup]
        + [
            (key, b"{not json", orphan.position),
            (key, codec.encode(orphan.envelope), orphan.position),
            (key, codec.encode(good.envelope), good.position),
        ],
    )
    task_id = signal_task_id(w.monitoring_id, 1)

    async def signalled() -> bool:
        worker.assert_alive()
        # The task exists in the store (the board sees it once the relay would send it).
        return bool(await store.read_stream(f"task-{task_id}"))

    await wait_until(signalled, seconds=45, what="the good reading's signal task")

    async def dead_lettered() -> list[Any]:
        found = await read_to_end(settings, settings.dlq_topic)
        return found if len(found) >= 2 else []

    await wait_until(dead_lettered, seconds=20, what="two messages on the DLQ")
    dead = await read_to_end(settings, settings.dlq_topic)
    reasons = {m.value: m.headers[ERROR_HEADER].decode() for m in dead}
    assert set(reasons) == {b"{not json", codec.encode(orphan.envelope)}
    assert "MalformedMessage" in reasons[b"{not json"]
    assert reasons[codec.encode(orphan.envelope)].startswith("signals: ValueError")
    assert "is not in the signals read model" in reasons[codec.encode(orphan.envelope)]
    worker.assert_alive()


async def test_with_two_workers_an_urgent_task_is_escalated_once_and_a_silence_signalled_once(
    settings: Settings, pool: asyncpg.Pool[Any], workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    store = EventStore(pool)
    [w] = await monitored_patients(build_handler(store), teams=1, per_team=1)
    # A monitoring plan (daily) that began ten days ago and never had a reading: its plan
    # and watch written with that time, as a plan entered then would have been.
    long_ago = datetime.now(UTC) - timedelta(days=10)
    silent = Watched(w.team_id, w.patient_id, str(uuid.uuid4()), str(uuid.uuid4()))

    def then(event: Any) -> NewEvent:
        return NewEvent(
            event=event,
            team_id=w.team_id,
            actor_id="dr-1",
            patient_id=w.patient_id,
            occurred_at=long_ago,
        )

    await store.append(
        f"careplan-{silent.plan_id}",
        0,
        [
            then(
                CarePlanCreated(
                    plan_id=silent.plan_id, patient_id=w.patient_id, team_id=w.team_id, title="BP"
                )
            ),
            then(
                PlanStatusChanged(
                    plan_id=silent.plan_id, status=PlanStatus.ACTIVE, previous=PlanStatus.DRAFT
                )
            ),
            then(
                MonitoringAdded(
                    plan_id=silent.plan_id,
                    monitoring_id=silent.monitoring_id,
                    measure_code="8480-6",
                    every_days=1,
                    unit="mm[Hg]",
                    high=140,
                    responsible_discipline=Discipline.NURSE,
                )
            ),
        ],
    )
    stream, event = observation(w, 350, at=datetime.now(UTC) - timedelta(minutes=5))
    await store.append(stream, 0, [event])
    timers = {
        "CARECOORD_SIGNAL_ESCALATE_AFTER_SECONDS": "1",
        "CARECOORD_SIGNAL_CHECK_SECONDS": "0.3",
        "CARECOORD_READING_OVERDUE_GRACE_HOURS": "0",
    }
    workers.start(settings, **timers)
    workers.start(settings, **timers)
    task_id = signal_task_id(w.monitoring_id, 1)
    async with relaying(settings, pool):

        async def escalated_and_silent() -> bool:
            for worker in workers.started:
                worker.assert_alive()
            escalated = await pool.fetchval(
                "SELECT escalated_at IS NOT NULL FROM board_tasks WHERE task_id = $1", task_id
            )
            told = await pool.fetchval(
                "SELECT silence_signalled IS NOT NULL FROM signal_watches WHERE monitoring_id = $1",
                silent.monitoring_id,
            )
            return bool(escalated and told)

        await wait_until(escalated_and_silent, seconds=60, what="an escalation and a silence")
        await asyncio.sleep(2)  # several more looks by both workers' timers
        await wait_settled(pool, workers)

    events = [r.envelope for r in await store.read_all(0, 10_000)]
    escalations = [e for e in events if isinstance(e.payload, TaskEscalated)]
    assert len(escalations) == 1
    assert escalations[0].payload.lead_ids == ("dr-1",)
    overdue = [
        e.payload
        for e in events
        if isinstance(e.payload, SignalRaised) and e.payload.status is SignalStatus.READING_OVERDUE
    ]
    assert len(overdue) == 1
    assert overdue[0].monitoring_id == silent.monitoring_id
    assert overdue[0].silent_since == long_ago
    [silence_task] = [
        t
        for t in await signal_tasks(pool)
        if t["task_id"] == signal_task_id(silent.monitoring_id, 1)
    ]
    assert silence_task["title"].startswith("No Systolic BP reading for 10 days")
    assert not await lagging(pool)


async def append_slowly(
    store: EventStore,
    rounds: list[list[tuple[str, NewEvent]]],
    *,
    pause: float,
    progress: list[int] | None = None,
) -> None:
    """Round after round, pausing between them (each round appended noted in `progress`)."""
    for events in rounds:
        await append_rounds(store, [events])
        if progress is not None:
            progress.append(len(events))
        await asyncio.sleep(pause)


async def test_a_queued_signal_that_cannot_be_sent_stays_queued_and_holds_up_no_other(
    pool: asyncpg.Pool[Any],
) -> None:
    handler = build_handler(EventStore(pool))
    [w] = await monitored_patients(handler, teams=1, per_team=1)
    good = RaiseSignal(
        monitoring_id=w.monitoring_id,
        plan_id=w.plan_id,
        patient_id=w.patient_id,
        team_id=w.team_id,
        discipline=Discipline.NURSE,
        readings=(
            Reading(
                observation_id="obs-1",
                position=1,
                event_id=str(uuid.uuid4()),
                status=SignalStatus.OUT_OF_RANGE,
                title="Glucose 250 mg/dL: above 180 mg/dL",
            ),
        ),
    )
    # Queued before the good one, and refused by the store (an envelope needs a team).
    bad = good.model_copy(update={"monitoring_id": str(uuid.uuid4()), "team_id": ""})
    async with pool.acquire() as conn:
        # One no version of the code can read, first of all.
        await conn.execute(
            "INSERT INTO signal_outbox (monitoring_id, body) VALUES ('m-?', '{\"shape\": 2}')"
        )
        await monitoring_store.owe(conn, [bad, good])

    assert await signal_side.drain(pool, handler.repository) == 1

    assert await EventStore(pool).read_stream(f"task-{signal_task_id(w.monitoring_id, 1)}")
    left = await pool.fetch("SELECT monitoring_id FROM signal_outbox ORDER BY seq")
    assert [r["monitoring_id"] for r in left] == ["m-?", bad.monitoring_id]
    assert await signal_side.drain(pool, handler.repository) == 0


async def test_a_signals_model_added_to_a_running_system_is_filled_from_history_silently(
    pool: asyncpg.Pool[Any],
) -> None:
    """As after the migration that added it: the boards have positions, the signals model
    none. The worker's start fills it from the store, queueing no signal for old readings."""
    store = EventStore(pool)
    watched = await monitored_patients(build_handler(store), teams=1, per_team=2)
    await append_rounds(store, reading_rounds(watched, per_plan=4))
    assert await rebuild.adopt(pool) == []  # a new system: the workers fill as events come
    events = [Positioned(r.position, r.envelope) for r in await store.read_all(0, 10_000)]
    await apply_batch(pool, BoardProjection(), events)

    assert await rebuild.adopt(pool) == ["signals"]
    assert await pool.fetchval("SELECT count(*) FROM signal_watches") == 2
    assert await pool.fetchval("SELECT count(*) FROM signal_readings") == 2
    assert await pool.fetchval("SELECT count(*) FROM signal_outbox") == 0  # history, not news
    reached = await pool.fetchval(
        "SELECT max(position) FROM projection_positions WHERE projection = 'signals'"
    )
    assert reached == events[-1].position
    assert await rebuild.adopt(pool) == []  # filled once
    checked = await rebuild.check(pool)
    assert checked.ok, checked.differences


async def test_the_projection_tells_the_worker_how_many_signals_a_batch_queued(
    pool: asyncpg.Pool[Any],
) -> None:
    """The worker has the drain run after a batch only when the batch queued signals: a
    plan's events queue none, a reading out of range one."""
    store = EventStore(pool)
    [w] = await monitored_patients(build_handler(store), teams=1, per_team=1)
    signals = monitoring_store.SignalsProjection()
    plan_events = [Positioned(r.position, r.envelope) for r in await store.read_all(0, 1000)]
    await apply_batch(pool, signals, plan_events)
    assert signals.take_queued() == 0

    at = datetime.now(UTC) - timedelta(minutes=5)
    await append_rounds(store, [[observation(w, 250, at=at)], [observation(w, 120, at=at)]])
    readings = await store.read_all(plan_events[-1].position, 1000)
    await apply_batch(pool, signals, [Positioned(r.position, r.envelope) for r in readings])
    assert signals.take_queued() == 1
    assert signals.take_queued() == 0  # taken
    assert await monitoring_store.owed_count(pool) == 1
