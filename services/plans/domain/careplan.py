"""The CarePlan aggregate: a patient's goals, tiered interventions, status and reviews."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator

from schemas.base import Event
from schemas.careplan import (
    CarePlanCreated,
    CarePlanReviewed,
    GoalAdded,
    GoalStatusChanged,
    InterventionAdded,
    InterventionDiscontinued,
    PlanStatusChanged,
)
from schemas.common import Discipline, GoalStatus, InterventionKind, PlanStatus, Sensitivity, Tier
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


Tags = Annotated[tuple[Sensitivity, ...], AfterValidator(distinct)]


@dataclass(frozen=True)
class Goal:
    id: str
    description: str
    target: str | None
    due_date: date | None
    status: GoalStatus = GoalStatus.PROPOSED


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
    next_review_date: date | None = None
    last_review_summary: str | None = None
    # How many reviews the plan has had; names the "review care plan" task of each.
    reviews: int = 0

    def patients(self) -> Touched:
        return {self.patient_id: frozenset(s for i in self.interventions for s in i.sensitivity)}

    def goal(self, goal_id: str) -> Goal | None:
        return next((g for g in self.goals if g.id == goal_id), None)

    def intervention(self, intervention_id: str) -> Intervention | None:
        return next((i for i in self.interventions if i.id == intervention_id), None)


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
