"""The CarePlan aggregate: a patient's goals (and their measurable targets), tiered
interventions, monitoring plans, status and reviews."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from itertools import pairwise
from typing import Annotated

from pydantic import AfterValidator

from schemas.base import Event
from schemas.careplan import (
    CarePlanCreated,
    CarePlanReviewed,
    GoalAdded,
    GoalStatusChanged,
    GoalTargetSet,
    InterventionAdded,
    InterventionDiscontinued,
    MonitoringAdded,
    MonitoringStopped,
    PlanStatusChanged,
)
from schemas.common import (
    Comparator,
    Discipline,
    GoalStatus,
    InterventionKind,
    PlanStatus,
    Sensitivity,
    Tier,
)
from services.common import dates
from services.common.commands import (
    Command,
    IdText,
    LongText,
    OptionalLongText,
    OptionalShortText,
    ShortText,
    Title,
    distinct,
)
from services.common.domain import AggregateType, Meta, Touched
from services.common.errors import InvalidInput, Missing, StateConflict
from services.plans.domain import measures

# Where a plan may go from each status. COMPLETED and REVOKED are final.
PLAN_MOVES: dict[PlanStatus, frozenset[PlanStatus]] = {
    PlanStatus.DRAFT: frozenset({PlanStatus.ACTIVE, PlanStatus.REVOKED}),
    PlanStatus.ACTIVE: frozenset({PlanStatus.ON_HOLD, PlanStatus.COMPLETED, PlanStatus.REVOKED}),
    PlanStatus.ON_HOLD: frozenset({PlanStatus.ACTIVE, PlanStatus.COMPLETED, PlanStatus.REVOKED}),
    PlanStatus.COMPLETED: frozenset(),
    PlanStatus.REVOKED: frozenset(),
}
CLOSED = frozenset({PlanStatus.COMPLETED, PlanStatus.REVOKED})

# Where a goal may go. ACHIEVED and CANCELLED are final; a goal not achieved may be retried.
GOAL_MOVES: dict[GoalStatus, frozenset[GoalStatus]] = {
    GoalStatus.PROPOSED: frozenset(
        {
            GoalStatus.IN_PROGRESS,
            GoalStatus.ACHIEVED,
            GoalStatus.NOT_ACHIEVED,
            GoalStatus.CANCELLED,
        }
    ),
    GoalStatus.IN_PROGRESS: frozenset(
        {GoalStatus.ACHIEVED, GoalStatus.NOT_ACHIEVED, GoalStatus.CANCELLED}
    ),
    GoalStatus.NOT_ACHIEVED: frozenset({GoalStatus.IN_PROGRESS, GoalStatus.CANCELLED}),
    GoalStatus.ACHIEVED: frozenset(),
    GoalStatus.CANCELLED: frozenset(),
}


# How often a monitoring plan may ask for a reading: daily at most, quarterly at least.
EVERY_DAYS_MIN = 1
EVERY_DAYS_MAX = 92

Tags = Annotated[tuple[Sensitivity, ...], AfterValidator(distinct)]


@dataclass(frozen=True)
class GoalTarget:
    """What makes a goal measurable: readings of a measure compared with `value` (to
    `high` for BETWEEN), in the unit the clinician gave."""

    measure_code: str
    comparator: Comparator
    value: float
    high: float | None
    unit: str

    @property
    def sensitivity(self) -> tuple[Sensitivity, ...]:
        """The measure's own tags: a PHQ-9 target tells of the patient's mental health."""
        return measures.measure(self.measure_code).sensitivity


@dataclass(frozen=True)
class Goal:
    id: str
    description: str
    target: str | None
    due_date: date | None
    status: GoalStatus = GoalStatus.PROPOSED
    measurable: GoalTarget | None = None


@dataclass(frozen=True)
class Monitoring:
    """A monitoring plan: read a measure every `every_days` days; thresholds (any may be
    absent) in the unit the clinician gave; the discipline that answers a reading out of range."""

    id: str
    measure_code: str
    every_days: int
    unit: str
    low: float | None
    high: float | None
    critical_low: float | None
    critical_high: float | None
    responsible_discipline: Discipline
    sensitivity: tuple[Sensitivity, ...]
    active: bool = True
    stopped_reason: str | None = None


@dataclass(frozen=True)
class Intervention:
    id: str
    kind: InterventionKind
    tier: Tier
    title: str
    detail: str | None
    responsible_discipline: Discipline
    sensitivity: tuple[Sensitivity, ...]
    due_date: date | None
    active: bool = True
    discontinued_reason: str | None = None


@dataclass(frozen=True)
class CarePlan:
    id: str
    patient_id: str
    team_id: str
    title: str
    status: PlanStatus = PlanStatus.DRAFT
    goals: tuple[Goal, ...] = ()
    interventions: tuple[Intervention, ...] = ()
    monitoring: tuple[Monitoring, ...] = ()
    next_review_date: date | None = None
    last_review_summary: str | None = None
    # How many reviews the plan has had; names the "review care plan" task of each.
    reviews: int = 0

    def patients(self) -> Touched:
        tags = [s for i in self.interventions for s in i.sensitivity]
        tags += [s for m in self.monitoring for s in m.sensitivity]
        tags += [s for g in self.goals if g.measurable for s in g.measurable.sensitivity]
        return {self.patient_id: frozenset(tags)}

    def goal(self, goal_id: str) -> Goal | None:
        return next((g for g in self.goals if g.id == goal_id), None)

    def intervention(self, intervention_id: str) -> Intervention | None:
        return next((i for i in self.interventions if i.id == intervention_id), None)

    def monitoring_plan(self, monitoring_id: str) -> Monitoring | None:
        return next((m for m in self.monitoring if m.id == monitoring_id), None)


class CreateCarePlan(Command):
    plan_id: IdText
    patient_id: IdText
    team_id: IdText
    title: Title


class AddGoal(Command):
    plan_id: IdText
    goal_id: IdText
    description: ShortText
    target: OptionalShortText = None
    due_date: date | None = None


class SetGoalStatus(Command):
    plan_id: IdText
    goal_id: IdText
    status: GoalStatus


class AddIntervention(Command):
    plan_id: IdText
    intervention_id: IdText
    kind: InterventionKind
    tier: Tier
    title: Title
    detail: OptionalLongText = None
    responsible_discipline: Discipline
    sensitivity: Tags = ()
    due_date: date | None = None


class DiscontinueIntervention(Command):
    plan_id: IdText
    intervention_id: IdText
    reason: ShortText


class AddMonitoring(Command):
    plan_id: IdText
    monitoring_id: IdText
    measure_code: IdText
    every_days: int
    unit: IdText
    low: float | None = None
    high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None
    responsible_discipline: Discipline
    sensitivity: Tags = ()


class StopMonitoring(Command):
    plan_id: IdText
    monitoring_id: IdText
    reason: ShortText


class SetGoalTarget(Command):
    plan_id: IdText
    goal_id: IdText
    measure_code: IdText
    comparator: Comparator
    value: float
    high: float | None = None
    unit: IdText


class SetPlanStatus(Command):
    plan_id: IdText
    status: PlanStatus


class ReviewCarePlan(Command):
    plan_id: IdText
    summary: LongText
    next_review_date: date


# The commands that change an existing plan.
PlanCommand = (
    AddGoal
    | SetGoalStatus
    | AddIntervention
    | DiscontinueIntervention
    | AddMonitoring
    | StopMonitoring
    | SetGoalTarget
    | SetPlanStatus
    | ReviewCarePlan
)


def decide(command: object, plan: CarePlan | None, now: datetime) -> Sequence[Event]:
    if isinstance(command, CreateCarePlan):
        if plan is not None:
            raise StateConflict(f"Care plan {command.plan_id} already exists.")
        return [
            CarePlanCreated(
                plan_id=command.plan_id,
                patient_id=command.patient_id,
                team_id=command.team_id,
                title=command.title,
            )
        ]
    if plan is None:
        raise StateConflict("That care plan does not exist.")
    match command:
        case SetPlanStatus():
            return _set_status(plan, command.status)
    # Everything else edits the plan, which a completed or revoked plan no longer allows.
    if plan.status in CLOSED:
        raise StateConflict(
            f"Care plan {plan.id} is {plan.status.value}; it can no longer be changed."
        )
    match command:
        case AddGoal():
            if plan.goal(command.goal_id) is not None:
                raise StateConflict(f"Goal {command.goal_id} is already on this plan.")
            dates.due_date(command.due_date, now)
            return [
                GoalAdded(
                    plan_id=plan.id,
                    goal_id=command.goal_id,
                    description=command.description,
                    target=command.target,
                    due_date=command.due_date,
                )
            ]
        case SetGoalStatus():
            goal = plan.goal(command.goal_id)
            if goal is None:
                raise Missing(f"Care plan {plan.id} has no goal {command.goal_id}.")
            if command.status not in GOAL_MOVES[goal.status]:
                raise StateConflict(
                    f"Goal {goal.id} is {goal.status.value}; it cannot become "
                    f"{command.status.value}{_allowed(GOAL_MOVES[goal.status])}."
                )
            return [GoalStatusChanged(plan_id=plan.id, goal_id=goal.id, status=command.status)]
        case AddIntervention():
            if plan.intervention(command.intervention_id) is not None:
                raise StateConflict(
                    f"Intervention {command.intervention_id} is already on this plan."
                )
            dates.due_date(command.due_date, now)
            return [
                InterventionAdded(
                    plan_id=plan.id,
                    intervention_id=command.intervention_id,
                    kind=command.kind,
                    tier=command.tier,
                    title=command.title,
                    detail=command.detail,
                    responsible_discipline=command.responsible_discipline,
                    sensitivity=command.sensitivity,
                    due_date=command.due_date,
                )
            ]
        case DiscontinueIntervention():
            intervention = plan.intervention(command.intervention_id)
            if intervention is None:
                raise Missing(f"Care plan {plan.id} has no intervention {command.intervention_id}.")
            if not intervention.active:
                raise StateConflict(f"Intervention {intervention.id} is already discontinued.")
            return [
                InterventionDiscontinued(
                    plan_id=plan.id, intervention_id=intervention.id, reason=command.reason
                )
            ]
        case AddMonitoring():
            if plan.monitoring_plan(command.monitoring_id) is not None:
                raise StateConflict(f"Monitoring {command.monitoring_id} is already on this plan.")
            measure = _thresholds(command)
            return [
                MonitoringAdded(
                    plan_id=plan.id,
                    monitoring_id=command.monitoring_id,
                    measure_code=measure.code,
                    every_days=command.every_days,
                    unit=command.unit,
                    low=command.low,
                    high=command.high,
                    critical_low=command.critical_low,
                    critical_high=command.critical_high,
                    responsible_discipline=command.responsible_discipline,
                    sensitivity=distinct((*command.sensitivity, *measure.sensitivity)),
                )
            ]
        case StopMonitoring():
            monitoring = plan.monitoring_plan(command.monitoring_id)
            if monitoring is None:
                raise Missing(f"Care plan {plan.id} has no monitoring {command.monitoring_id}.")
            if not monitoring.active:
                raise StateConflict(f"Monitoring {monitoring.id} is already stopped.")
            return [
                MonitoringStopped(
                    plan_id=plan.id, monitoring_id=monitoring.id, reason=command.reason
                )
            ]
        case SetGoalTarget():
            goal = plan.goal(command.goal_id)
            if goal is None:
                raise Missing(f"Care plan {plan.id} has no goal {command.goal_id}.")
            _target(command)
            return [
                GoalTargetSet(
                    plan_id=plan.id,
                    goal_id=goal.id,
                    measure_code=command.measure_code,
                    comparator=command.comparator,
                    value=command.value,
                    high=command.high,
                    unit=command.unit,
                )
            ]
        case ReviewCarePlan():
            dates.review_date(command.next_review_date, now)
            return [
                CarePlanReviewed(
                    plan_id=plan.id,
                    summary=command.summary,
                    next_review_date=command.next_review_date,
                )
            ]
    raise InvalidInput(f"A care plan cannot handle {type(command).__name__}.")


def _thresholds(command: AddMonitoring) -> measures.Measure:
    """The measure, once the unit, the interval and the thresholds are known to be sound:
    each threshold a possible value of the measure, and, compared in the measure's
    canonical unit, criticalLow < low <= high < criticalHigh for those given."""
    measure = measures.measure(command.measure_code)
    measures.check_unit(measure, command.unit)
    if not EVERY_DAYS_MIN <= command.every_days <= EVERY_DAYS_MAX:
        raise InvalidInput(f"everyDays must be from {EVERY_DAYS_MIN} to {EVERY_DAYS_MAX}")
    named = (
        ("criticalLow", command.critical_low),
        ("low", command.low),
        ("high", command.high),
        ("criticalHigh", command.critical_high),
    )
    given = [
        (name, measures.canonical(measure, value, command.unit, argument=name))
        for name, value in named
        if value is not None
    ]
    if not given:
        raise InvalidInput("give at least one of low, high, criticalLow, criticalHigh")
    for (lower, below), (upper, above) in pairwise(given):
        if (lower, upper) == ("low", "high"):
            if below > above:
                raise InvalidInput("low must not be above high")
        elif below >= above:
            raise InvalidInput(f"{lower} must be below {upper}")
    return measure


def _target(command: SetGoalTarget) -> None:
    """InvalidInput unless the target's measure takes its unit, its values are possible,
    and BETWEEN has a `high` above `value` while the other comparators have none."""
    measure = measures.measure(command.measure_code)
    value = measures.canonical(measure, command.value, command.unit)
    if command.comparator is not Comparator.BETWEEN:
        if command.high is not None:
            raise InvalidInput(f"high is only for BETWEEN, not {command.comparator.value}")
        return
    if command.high is None:
        raise InvalidInput("high is needed for BETWEEN")
    if measures.canonical(measure, command.high, command.unit, argument="high") <= value:
        raise InvalidInput("high must be above value for BETWEEN")


def _set_status(plan: CarePlan, status: PlanStatus) -> Sequence[Event]:
    allowed = PLAN_MOVES[plan.status]
    if status not in allowed:
        raise StateConflict(
            f"Care plan {plan.id} is {plan.status.value}; it cannot become "
            f"{status.value}{_allowed(allowed)}."
        )
    return [PlanStatusChanged(plan_id=plan.id, status=status, previous=plan.status)]


def _allowed(moves: frozenset[GoalStatus] | frozenset[PlanStatus]) -> str:
    if not moves:
        return " (that status is final)"
    return " (it can become " + ", ".join(sorted(m.value for m in moves)) + ")"


def evolve(plan: CarePlan | None, event: Event, meta: Meta | None = None) -> CarePlan:
    del meta  # nothing here depends on who or when
    if isinstance(event, CarePlanCreated):
        return CarePlan(
            id=event.plan_id, patient_id=event.patient_id, team_id=event.team_id, title=event.title
        )
    if plan is None:
        raise ValueError(f"{event.event_type} before CarePlanCreated")
    match event:
        case GoalAdded():
            goal = Goal(event.goal_id, event.description, event.target, event.due_date)
            return replace(plan, goals=(*plan.goals, goal))
        case GoalStatusChanged():
            goals = tuple(
                replace(g, status=event.status) if g.id == event.goal_id else g for g in plan.goals
            )
            return replace(plan, goals=goals)
        case InterventionAdded():
            intervention = Intervention(
                id=event.intervention_id,
                kind=event.kind,
                tier=event.tier,
                title=event.title,
                detail=event.detail,
                responsible_discipline=event.responsible_discipline,
                sensitivity=event.sensitivity,
                due_date=event.due_date,
            )
            return replace(plan, interventions=(*plan.interventions, intervention))
        case InterventionDiscontinued():
            interventions = tuple(
                replace(i, active=False, discontinued_reason=event.reason)
                if i.id == event.intervention_id
                else i
                for i in plan.interventions
            )
            return replace(plan, interventions=interventions)
        case GoalTargetSet():
            target = GoalTarget(
                measure_code=event.measure_code,
                comparator=event.comparator,
                value=event.value,
                high=event.high,
                unit=event.unit,
            )
            goals = tuple(
                replace(g, measurable=target) if g.id == event.goal_id else g for g in plan.goals
            )
            return replace(plan, goals=goals)
        case MonitoringAdded():
            monitoring = Monitoring(
                id=event.monitoring_id,
                measure_code=event.measure_code,
                every_days=event.every_days,
                unit=event.unit,
                low=event.low,
                high=event.high,
                critical_low=event.critical_low,
                critical_high=event.critical_high,
                responsible_discipline=event.responsible_discipline,
                sensitivity=event.sensitivity,
            )
            return replace(plan, monitoring=(*plan.monitoring, monitoring))
        case MonitoringStopped():
            stopped = tuple(
                replace(m, active=False, stopped_reason=event.reason)
                if m.id == event.monitoring_id
                else m
                for m in plan.monitoring
            )
            return replace(plan, monitoring=stopped)
        case PlanStatusChanged():
            return replace(plan, status=event.status)
        case CarePlanReviewed():
            return replace(
                plan,
                next_review_date=event.next_review_date,
                last_review_summary=event.summary,
                reviews=plan.reviews + 1,
            )
    raise ValueError(f"a care plan has no {event.event_type} events")


CARE_PLAN = AggregateType[CarePlan](
    name="care plan", stream_prefix="careplan-", evolve=evolve, decide=decide
)
