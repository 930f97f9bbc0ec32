"""Events of the CarePlan aggregate: goals, interventions, status and reviews."""

from __future__ import annotations

from typing import ClassVar

from schemas.base import Event
from schemas.common import (
    Comparator,
    Day,
    Discipline,
    GoalStatus,
    Id,
    InterventionKind,
    NonEmptyStr,
    PlanStatus,
    Sensitivity,
    Tier,
)


class CarePlanCreated(Event):
    """A care plan was started for a patient."""

    event_type: ClassVar[str] = "CarePlanCreated"

    plan_id: Id
    patient_id: Id
    team_id: Id
    title: NonEmptyStr


class GoalAdded(Event):
    """A goal was added to a care plan."""

    event_type: ClassVar[str] = "GoalAdded"

    plan_id: Id
    goal_id: Id
    description: NonEmptyStr
    target: str | None = None
    due_date: Day | None = None


class GoalStatusChanged(Event):
    """A goal's status changed."""

    event_type: ClassVar[str] = "GoalStatusChanged"

    plan_id: Id
    goal_id: Id
    status: GoalStatus


class InterventionAdded(Event):
    """An intervention was added to a care plan."""

    event_type: ClassVar[str] = "InterventionAdded"

    plan_id: Id
    intervention_id: Id
    kind: InterventionKind
    tier: Tier
    title: NonEmptyStr
    detail: str | None = None
    responsible_discipline: Discipline
    sensitivity: tuple[Sensitivity, ...] = ()
    due_date: Day | None = None


class InterventionDiscontinued(Event):
    """An intervention was stopped; it stays on the plan as inactive."""

    event_type: ClassVar[str] = "InterventionDiscontinued"

    plan_id: Id
    intervention_id: Id
    reason: NonEmptyStr


class PlanStatusChanged(Event):
    """A care plan's status changed."""

    event_type: ClassVar[str] = "PlanStatusChanged"

    plan_id: Id
    status: PlanStatus
    # Kept so that consumers can tell transitions apart without replaying the plan.
    previous: PlanStatus


class CarePlanReviewed(Event):
    """A care plan was reviewed and its next review date set."""

    event_type: ClassVar[str] = "CarePlanReviewed"

    plan_id: Id
    summary: NonEmptyStr
    next_review_date: Day


class MonitoringAdded(Event):
    """A monitoring plan was added to a care plan: a measure (LOINC code) to read every
    `every_days` days, its thresholds in the unit the clinician gave, and who answers."""

    event_type: ClassVar[str] = "MonitoringAdded"

    plan_id: Id
    monitoring_id: Id
    measure_code: NonEmptyStr
    every_days: int
    unit: NonEmptyStr
    low: float | None = None
    high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None
    responsible_discipline: Discipline
    # The tags given plus the measure's own (a PHQ-9 plan is MENTAL_HEALTH).
    sensitivity: tuple[Sensitivity, ...] = ()


class MonitoringStopped(Event):
    """A monitoring plan was stopped; it stays on the plan as inactive."""

    event_type: ClassVar[str] = "MonitoringStopped"

    plan_id: Id
    monitoring_id: Id
    reason: NonEmptyStr


class GoalTargetSet(Event):
    """A goal was made measurable: a measure and the target its readings should meet
    (`value` to `high` for BETWEEN), in the unit the clinician gave. Replaces any earlier one."""

    event_type: ClassVar[str] = "GoalTargetSet"

    plan_id: Id
    goal_id: Id
    measure_code: NonEmptyStr
    comparator: Comparator
    value: float
    high: float | None = None
    unit: NonEmptyStr
