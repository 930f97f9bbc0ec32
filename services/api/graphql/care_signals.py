"""Care signals as the API reads them: the loaders one operation shares, the tags a
monitoring plan lends its readings, a reading's place against the patient's monitoring
plans, and the clock goal progress and overdue readings are judged by.

Each loader is a DataLoader kept on the context for one operation, so a care plan (or a
list of them) costs one query of the signals read model however many monitoring plans and
goals it shows:
- `plan_signals`: the read model of care plans (monitoring_store.of_plans): each
  monitoring plan's state and the latest readings of their patients;
- `patient_monitors`: a patient's monitoring plans, read from their care-plan aggregates,
  the authority on what a reading is tagged with (no projection lag);
- `observation`: a reading from its stream (observation-<id>).

Goal progress is judged on the UTC day of the request's clock, as the signal processor
(by the reading's time) and the FHIR export judge it, so what a plan shows and what a
push said agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, timedelta
from typing import TypeVar

from strawberry.dataloader import DataLoader

from schemas.careplan import CarePlanCreated
from schemas.common import Sensitivity
from schemas.signal import SignalStatus
from services.api.graphql.context import Context
from services.plans.domain import careplan, measures
from services.plans.domain.careplan import CARE_PLAN
from services.plans.domain.observation import OBSERVATION, Observation
from services.tasks import monitoring_store
from services.tasks.monitoring import GoalState, Signals
from services.tasks.signals import Thresholds, classify

Monitors = tuple[careplan.Monitoring, ...]
K = TypeVar("K")
V = TypeVar("V")

_BEYOND = frozenset({SignalStatus.OUT_OF_RANGE, SignalStatus.CRITICAL})


def _loader(
    ctx: Context, name: str, load: Callable[[list[K]], Awaitable[Sequence[V]]]
) -> DataLoader[K, V]:
    found: DataLoader[K, V] | None = ctx.loaders.get(name)
    if found is None:
        found = DataLoader(load_fn=load)
        ctx.loaders[name] = found
    return found


async def plan_signals(ctx: Context, plan_id: str) -> Signals:
    """The signals read model of the plan (with every other plan this operation asked for)."""

    async def load(plan_ids: list[str]) -> list[Signals]:
        async with ctx.database.acquire() as conn:
            found = await monitoring_store.of_plans(conn, plan_ids)
        return [found] * len(plan_ids)

    return await _loader(ctx, "plan_signals", load).load(plan_id)


async def patient_monitors(ctx: Context, patient_id: str) -> Monitors:
    """Every monitoring plan of the patient, active or not, on any of their care plans."""

    async def load(patient_ids: list[str]) -> list[Monitors]:
        plans = await ctx.repository.load_for_patients(CARE_PLAN, patient_ids, CarePlanCreated)
        found: dict[str, list[careplan.Monitoring]] = {p: [] for p in patient_ids}
        for loaded in plans:
            if loaded.state is not None and loaded.state.patient_id in found:
                found[loaded.state.patient_id] += loaded.state.monitoring
        return [tuple(found[p]) for p in patient_ids]

    return await _loader(ctx, "patient_monitors", load).load(patient_id)


async def observation(ctx: Context, observation_id: str) -> Observation | None:
    """A reading from its stream; None if there is none by that id."""

    async def load(ids: list[str]) -> list[Observation | None]:
        found = {
            s.id: s
            for loaded in await ctx.repository.load_many(OBSERVATION, ids)
            if (s := loaded.state) is not None
        }
        return [found.get(i) for i in ids]

    return await _loader(ctx, "observations", load).load(observation_id)


def lent_tags(monitors: Monitors, measure_code: str) -> frozenset[Sensitivity]:
    """The tags the patient's monitoring plans of a measure lend its readings."""
    return frozenset(t for m in monitors if m.measure_code == measure_code for t in m.sensitivity)


async def progress_tags(
    ctx: Context, plan: careplan.CarePlan, target: careplan.GoalTarget
) -> frozenset[Sensitivity]:
    """The tags a measurable goal's progress carries: its target's, and those the
    patient's monitoring plans of the measure lend the readings it is judged on (a
    progress tells of them, so whoever sees them redacted sees no progress)."""
    monitors = await patient_monitors(ctx, plan.patient_id)
    return frozenset(target.sensitivity) | lent_tags(monitors, target.measure_code)


def out_of_range(monitors: Monitors, reading: Observation) -> bool:
    """Whether the reading is outside low..high, or beyond a critical limit, of any of the
    patient's monitoring plans of its measure (judged in each plan's unit)."""
    m = measures.measure(reading.measure_code)
    for plan in monitors:
        if plan.measure_code != reading.measure_code:
            continue
        value = (
            reading.value
            if reading.unit == plan.unit
            else measures.convert(m, reading.canonical_value, m.unit, plan.unit)
        )
        limits = Thresholds(plan.low, plan.high, plan.critical_low, plan.critical_high)
        if classify(limits, value) in _BEYOND:
            return True
    return False


def grace(ctx: Context) -> timedelta:
    """How long past its interval a monitoring plan's reading may be before it is overdue."""
    return timedelta(hours=ctx.settings.reading_overdue_grace_hours)


def today(ctx: Context) -> date:
    """The day goal progress is judged on: the UTC day of the request's clock."""
    return ctx.now().astimezone(UTC).date()


def goal_state(goal: careplan.Goal, plan: careplan.CarePlan) -> GoalState:
    """A goal of the plan aggregate as the progress rule takes it (its target as the plan
    shows it, not as the read model last saw it)."""
    target = goal.measurable
    return GoalState(
        goal_id=goal.id,
        plan_id=plan.id,
        team_id=plan.team_id,
        patient_id=plan.patient_id,
        status=goal.status,
        due_date=goal.due_date,
        measure_code=target.measure_code if target else None,
        comparator=target.comparator.value if target else None,
        value=target.value if target else None,
        high=target.high if target else None,
        unit=target.unit if target else None,
    )
