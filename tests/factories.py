"""Sample events for tests and benchmarks."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from schemas.audit import AccessAction, AccessRecorded
from schemas.careplan import GoalAdded
from schemas.common import AccessOutcome, Purpose, Sensitivity, TaskStatus
from schemas.task import TaskCreated, TaskMoved
from services.common.event_store import NewEvent


def goal_added(
    plan_id: str,
    *,
    team_id: str,
    description: str = "HbA1c below 7.5% in 3 months",
    actor_id: str = "user-1",
    patient_id: str | None = None,
) -> NewEvent:
    """A GoalAdded event for a plan's stream, ready to append."""
    return NewEvent(
        event=GoalAdded(
            plan_id=plan_id,
            goal_id=str(uuid.uuid4()),
            description=description,
            target=None,
            due_date=None,
        ),
        team_id=team_id,
        actor_id=actor_id,
        patient_id=patient_id,
    )


def task_created(
    task_id: str,
    *,
    team_id: str,
    title: str = "Check foot pulses",
    due_date: date | None = None,
    actor_id: str = "user-1",
    patient_id: str | None = None,
) -> NewEvent:
    """A TaskCreated event for stream task-<task_id>, ready to append. The event allows
    any due date (the command is what refuses one far in the past)."""
    return NewEvent(
        event=TaskCreated(
            task_id=task_id,
            team_id=team_id,
            title=title,
            patient_id=patient_id,
            due_date=due_date,
            source="manual",
        ),
        team_id=team_id,
        actor_id=actor_id,
        patient_id=patient_id,
    )


def task_moved(
    task_id: str,
    *,
    team_id: str,
    status: TaskStatus,
    previous: TaskStatus,
    reason: str | None = None,
    actor_id: str = "user-1",
) -> NewEvent:
    """A TaskMoved event for stream task-<task_id>, ready to append."""
    return NewEvent(
        event=TaskMoved(task_id=task_id, status=status, previous=previous, reason=reason),
        team_id=team_id,
        actor_id=actor_id,
    )


def access_recorded(n: int, *, at: datetime, **fields: Any) -> AccessRecorded:
    """The n-th access record of a series, a GENETIC read every other one."""
    values: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "at": at,
        "actor_id": f"u-{n % 3}",
        "actor_name": "Ada Lovelace",
        "patient_id": f"p-{n}",
        "action": AccessAction.READ,
        "resource_type": "CarePlan",
        "resource_id": f"plan-{n}",
        "purpose": Purpose.TREATMENT,
        "outcome": AccessOutcome.PERMIT,
        "reason": "member of the care team",
        "sensitivity": (Sensitivity.GENETIC,) if n % 2 else (),
    }
    return AccessRecorded(**{**values, **fields})
