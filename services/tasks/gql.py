"""The Task GraphQL type (the board and task mutations build on it)."""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from services.api.types import Discipline, Sensitivity, TaskStatus, optional_id
from services.plans.handlers import Loaded
from services.tasks.domain import Task as TaskState


@strawberry.type(description="A card on a team's board.")
class Task:
    id: strawberry.ID
    team_id: strawberry.ID
    patient_id: strawberry.ID | None
    plan_id: strawberry.ID | None
    title: str
    status: TaskStatus
    assignee_id: strawberry.ID | None
    discipline: Discipline | None
    due_date: date | None
    overdue: bool
    sensitivity: list[Sensitivity]
    redacted: bool = strawberry.field(
        description="True when title and detail are withheld by the consent policy."
    )
    updated_at: datetime

    @classmethod
    def from_state(cls, loaded: Loaded[TaskState], *, now: datetime) -> Task:
        task = loaded.state
        assert task is not None
        return cls(
            id=strawberry.ID(task.id),
            team_id=strawberry.ID(task.team_id),
            patient_id=optional_id(task.patient_id),
            plan_id=optional_id(task.plan_id),
            title=task.title,
            status=task.status,
            assignee_id=optional_id(task.assignee_id),
            discipline=task.discipline,
            due_date=task.due_date,
            overdue=task.overdue(now),
            sensitivity=list(task.sensitivity),
            redacted=False,
            updated_at=task.updated_at,
        )
