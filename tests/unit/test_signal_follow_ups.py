"""Signals through the write side on the in-memory event store: a raised signal opens its
task on both streams at once; a monitoring plan stopped, or its care plan completed or
revoked, cancels its open signal task and ends its signals, so a signal still queued for
it opens nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.common import Discipline, PlanStatus, TaskStatus
from schemas.signal import SignalRaised, SignalsStopped, SignalStatus
from schemas.task import TaskMoved
from services.common.aggregates import NEW, Handler, Scope, new_id
from services.common.commands import build
from services.common.memory_store import InMemoryEventStore
from services.plans.domain import careplan
from services.plans.domain.careplan import CARE_PLAN
from services.tasks.domain import TASK, MoveTask
from services.tasks.signal_aggregate import SIGNAL, RaiseSignal, Reading, signal_task_id
from services.tasks.signal_side import raise_signal
from services.tasks.write_side import build_handler
from tests.write_side import CALLER, create_team, enroll, enrollment

NOW = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore(clock=clock)


@pytest.fixture
def handler(store: InMemoryEventStore) -> Handler:
    return build_handler(store, clock=clock)


class Monitored:
    def __init__(self, handler: Handler, plan_id: str, scope: Scope, ids: list[str]) -> None:
        self.handler, self.plan_id, self.scope, self.ids = handler, plan_id, scope, ids
        self.position = 100

    async def run(self, command_type: type, **fields: object) -> None:
        command = build(command_type, plan_id=self.plan_id, **fields)
        await self.handler.execute(
            CARE_PLAN, self.plan_id, command, caller=CALLER, scope=self.scope
        )

    async def signal(self, monitoring_id: str) -> int | None:
        self.position += 1
        reading = Reading(
            observation_id=new_id(),
            position=self.position,
            event_id=new_id(),
            status=SignalStatus.CRITICAL,
            title="Glucose 320 mg/dL: critical at or above 300 mg/dL",
        )
        command = RaiseSignal(
            monitoring_id=monitoring_id,
            plan_id=self.plan_id,
            patient_id=self.scope.patient_id or "",
            team_id=self.scope.team_id,
            discipline=Discipline.NURSE,
            readings=(reading,),
        )
        return await raise_signal(self.handler.repository, command)

    async def task_status(self, monitoring_id: str, episode: int = 1) -> TaskStatus | None:
        task = await self.handler.repository.load(TASK, signal_task_id(monitoring_id, episode))
        return task.state.status if task.state else None


async def monitored(handler: Handler, plans: int = 2) -> Monitored:
    team_id = await create_team(handler)
    patient_id = await enroll(handler, enrollment(team_id))
    plan_id = new_id()
    scope = Scope(team_id, patient_id)
    create = build(
        careplan.CreateCarePlan,
        plan_id=plan_id,
        patient_id=patient_id,
        team_id=team_id,
        title="Diabetes",
    )
    await handler.execute(CARE_PLAN, plan_id, create, caller=CALLER, scope=scope, known=NEW)
    m = Monitored(handler, plan_id, scope, [new_id() for _ in range(plans)])
    await m.run(careplan.SetPlanStatus, status=PlanStatus.ACTIVE)
    for monitoring_id in m.ids:
        await m.run(
            careplan.AddMonitoring,
            monitoring_id=monitoring_id,
            measure_code="2339-0",
            every_days=7,
            unit="mg/dL",
            low=70,
            high=180,
            critical_high=300,
            responsible_discipline=Discipline.NURSE,
        )
    return m


async def test_a_raised_signal_writes_the_signal_and_its_task_with_the_reading_as_cause(
    handler: Handler, store: InMemoryEventStore
) -> None:
    m = await monitored(handler, plans=1)
    assert await m.signal(m.ids[0]) is not None
    [raised] = await store.read_stream(SIGNAL.stream_id(m.ids[0]))
    assert isinstance(raised.payload, SignalRaised)
    assert raised.causation_id is not None and raised.team_id == m.scope.team_id
    assert await m.task_status(m.ids[0]) is TaskStatus.TODO


async def test_stopping_a_monitoring_plan_cancels_its_open_signal_task_and_ends_its_signals(
    handler: Handler, store: InMemoryEventStore
) -> None:
    m = await monitored(handler)
    stopped, kept = m.ids
    await m.signal(stopped)
    await m.signal(kept)

    await m.run(careplan.StopMonitoring, monitoring_id=stopped, reason="HbA1c at target.")

    assert await m.task_status(stopped) is TaskStatus.CANCELLED
    assert await m.task_status(kept) is TaskStatus.TODO
    *_, last = await store.read_stream(TASK.stream_id(signal_task_id(stopped, 1)))
    assert isinstance(last.payload, TaskMoved) and last.payload.reason == "Monitoring stopped."
    # A reading queued before the stop reached the processor opens nothing now.
    assert await m.signal(stopped) is None
    assert await m.task_status(stopped, episode=2) is None
    assert await m.signal(kept) is not None


async def test_a_monitoring_plan_stopped_before_any_signal_opens_no_task_for_a_late_one(
    handler: Handler, store: InMemoryEventStore
) -> None:
    m = await monitored(handler, plans=1)
    await m.run(careplan.StopMonitoring, monitoring_id=m.ids[0], reason="Not needed.")
    [ended] = await store.read_stream(SIGNAL.stream_id(m.ids[0]))
    assert isinstance(ended.payload, SignalsStopped)
    assert await m.signal(m.ids[0]) is None
    assert await m.task_status(m.ids[0]) is None


@pytest.mark.parametrize("status", [PlanStatus.COMPLETED, PlanStatus.REVOKED])
async def test_a_care_plan_completed_or_revoked_cancels_its_open_signal_tasks(
    handler: Handler, status: PlanStatus
) -> None:
    m = await monitored(handler)
    first, second = m.ids
    await m.signal(first)
    await m.signal(second)
    await m.run(careplan.StopMonitoring, monitoring_id=second, reason="Stable.")

    await m.run(careplan.SetPlanStatus, status=status)

    assert await m.task_status(first) is TaskStatus.CANCELLED
    assert await m.task_status(second) is TaskStatus.CANCELLED  # by the stop, once
    assert await m.signal(first) is None


async def test_a_signal_task_closed_by_the_team_is_left_alone_when_the_plan_ends(
    handler: Handler, store: InMemoryEventStore
) -> None:
    m = await monitored(handler, plans=1)
    await m.signal(m.ids[0])
    task_id = signal_task_id(m.ids[0], 1)
    move = build(MoveTask, task_id=task_id, status=TaskStatus.DONE)
    await handler.execute(TASK, task_id, move, caller=CALLER, scope=m.scope)
    await m.run(careplan.SetPlanStatus, status=PlanStatus.COMPLETED)
    assert await m.task_status(m.ids[0]) is TaskStatus.DONE
