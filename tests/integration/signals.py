"""Helpers of the care-signal integration tests: monitored patients made through the real
write side, readings appended as the Observation aggregate records them, waiting for the
pipeline to settle, the signal tasks and streams to compare, and a clean run of the same
events on a fresh database (projected and drained in this process, as the worker does)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from schemas.common import Discipline, PlanStatus
from schemas.observation import ObservationRecorded, ObservationSource
from schemas.signal import SignalRaised
from services.common.aggregates import NEW, Handler, Scope
from services.common.commands import build
from services.common.event_store import EventStore, NewEvent, RecordedEvent, StreamWrite
from services.common.projection import Positioned, apply_batch
from services.plans.domain import careplan, measures
from services.plans.domain.careplan import CARE_PLAN
from services.tasks import signal_side
from services.tasks.agents import default_projections
from services.tasks.signal_side import SIGNALS_ACTOR
from services.tasks.write_side import build_handler
from tests.write_side import CALLER, create_team, enroll, enrollment

GLUCOSE = "2339-0"
# A reading cycle: in range, out of range, critical (mg/dL; watch 70-180, critical >= 300).
VALUES = (120, 250, 95, 320, 60, 190, 140, 410)


@dataclass(frozen=True)
class Watched:
    team_id: str
    patient_id: str
    plan_id: str
    monitoring_id: str


async def monitored_patients(
    handler: Handler, *, teams: int, per_team: int, unit: str = "mg/dL"
) -> list[Watched]:
    """Teams each with patients on an ACTIVE plan with glucose monitoring (NURSE, 70-180,
    critical at 300 mg/dL, or the same in mmol/L), made through the write side."""
    out = []
    for _ in range(teams):
        team_id = await create_team(handler)
        for n in range(per_team):
            patient_id = await enroll(handler, enrollment(team_id, mrn=f"MRN-{n}"))
            plan_id, monitoring_id = str(uuid.uuid4()), str(uuid.uuid4())
            scope = Scope(team_id, patient_id)

            async def run(command: Any, **kw: Any) -> None:
                await handler.execute(CARE_PLAN, plan_id, command, caller=CALLER, scope=scope, **kw)  # noqa: B023

            await run(
                build(
                    careplan.CreateCarePlan,
                    plan_id=plan_id,
                    patient_id=patient_id,
                    team_id=team_id,
                    title="Diabetes",
                ),
                known=NEW,
            )
            await run(build(careplan.SetPlanStatus, plan_id=plan_id, status=PlanStatus.ACTIVE))
            limits = (
                {"low": 70, "high": 180, "critical_high": 300}
                if unit == "mg/dL"
                else {"low": 3.9, "high": 10.0, "critical_high": 16.7}
            )
            await run(
                build(
                    careplan.AddMonitoring,
                    plan_id=plan_id,
                    monitoring_id=monitoring_id,
                    measure_code=GLUCOSE,
                    every_days=7,
                    unit=unit,
                    responsible_discipline=Discipline.NURSE,
                    **limits,
                )
            )
            out.append(Watched(team_id, patient_id, plan_id, monitoring_id))
    return out


def observation(
    w: Watched, value: float, *, at: datetime, unit: str = "mg/dL"
) -> tuple[str, NewEvent]:
    """(stream, event) of a valid ObservationRecorded, canonical value and all."""
    m = measures.measure(GLUCOSE)
    observation_id = str(uuid.uuid4())
    event = ObservationRecorded(
        observation_id=observation_id,
        patient_id=w.patient_id,
        measure_code=GLUCOSE,
        value=value,
        unit=unit,
        canonical_value=measures.canonical(m, value, unit),
        canonical_unit=m.unit,
        at=at,
        source=ObservationSource.PATIENT_REPORTED,
        recorded_by="nurse-1",
    )
    return f"observation-{observation_id}", NewEvent(
        event=event, team_id=w.team_id, actor_id="nurse-1", patient_id=w.patient_id
    )


def reading_rounds(watched: list[Watched], per_plan: int) -> list[list[tuple[str, NewEvent]]]:
    """Round by round, one reading of each monitored patient, taken in the last hours."""
    start = datetime.now(UTC) - timedelta(hours=2)
    return [
        [
            observation(w, VALUES[(n + i) % len(VALUES)], at=start + timedelta(seconds=n))
            for i, w in enumerate(watched)
        ]
        for n in range(per_plan)
    ]


async def append_rounds(store: EventStore, rounds: list[list[tuple[str, NewEvent]]]) -> int:
    appended = 0
    for events in rounds:
        await store.append_many([StreamWrite(stream, 0, [event]) for stream, event in events])
        appended += len(events)
    return appended


# --- waiting and reading back --------------------------------------------------------


async def lagging(pool: asyncpg.Pool[Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """(projection, team) -> (applied, store head) for the board and signals models that
    are not at their team's head."""
    rows = await pool.fetch(
        """
        SELECT p.name, e.team_id, max(e.position) AS head, coalesce(max(t.position), 0) AS at
        FROM events e CROSS JOIN (VALUES ('board'), ('signals')) AS p(name)
        LEFT JOIN projection_positions t ON t.projection = p.name AND t.team_id = e.team_id
        GROUP BY p.name, e.team_id
        """
    )
    return {(r["name"], r["team_id"]): (r["at"], r["head"]) for r in rows if r["at"] != r["head"]}


async def settled(pool: asyncpg.Pool[Any]) -> bool:
    """Nothing owed to the write side and every model at its team's head (in that order:
    a drain appends its signals before it drops what it sent)."""
    if await pool.fetchval("SELECT count(*) FROM signal_outbox"):
        return False
    return not await lagging(pool)


SIGNAL_TASK = """
    SELECT task_id, team_id, patient_id, plan_id, discipline, title, status, signal_count,
           urgent_since IS NOT NULL AS urgent, escalated_at IS NOT NULL AS escalated
    FROM board_tasks WHERE source = 'signal' ORDER BY task_id
"""


async def signal_tasks(pool: asyncpg.Pool[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(SIGNAL_TASK)]


async def signal_streams(pool: asyncpg.Pool[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Each Signal stream as (status, count, observation, task, silence) per event: what
    was signalled, free of positions and event ids (a fresh database numbers its own)."""
    store = EventStore(pool)
    out: dict[str, list[tuple[Any, ...]]] = {}
    for r in await store.read_all(0, 1_000_000):
        p = r.envelope.payload
        if isinstance(p, SignalRaised):
            out.setdefault(r.envelope.stream_id, []).append(
                (p.status, p.count, p.observation_id, p.task_id, p.silent_since)
            )
    return out


# --- a clean run on a fresh database -------------------------------------------------


def _inputs(recorded: list[RecordedEvent]) -> list[RecordedEvent]:
    """What people wrote (plans, readings): not what the signal processor wrote."""
    return [r for r in recorded if r.envelope.actor_id != SIGNALS_ACTOR]


async def clean_run(source: asyncpg.Pool[Any], fresh: asyncpg.Pool[Any]) -> None:
    """The source's input events appended to the fresh database in store order, then
    projected and drained batch by batch in this process (no broker, no crash, no
    redelivery), until nothing more is owed."""
    store = EventStore(fresh)
    for r in _inputs(await EventStore(source).read_all(0, 1_000_000)):
        env = r.envelope
        await store.append_many(
            [
                StreamWrite(
                    env.stream_id,
                    env.stream_version - 1 if env.stream_version > 0 else 0,
                    [
                        NewEvent(
                            event=env.payload,
                            team_id=env.team_id,
                            actor_id=env.actor_id,
                            patient_id=env.patient_id,
                            correlation_id=env.correlation_id,
                            causation_id=env.causation_id,
                            occurred_at=env.occurred_at,
                            event_id=env.event_id,
                        )
                    ],
                )
            ]
        )
    handler = build_handler(store)
    projections = default_projections()
    after = 0
    while batch := await store.read_all(after, 500):
        after = batch[-1].position
        items = [Positioned(r.position, r.envelope) for r in batch]
        for projection in projections:
            await apply_batch(fresh, projection, items)
        while await signal_side.drain(fresh, handler.repository):
            pass
