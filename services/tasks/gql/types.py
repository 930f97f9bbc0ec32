"""The board's GraphQL types: Task, BoardColumn, Board and BoardEvent."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import strawberry

from services.api.access import RESTRICTED, View, withheld
from services.api.types import Discipline, Sensitivity, TaskStatus, optional_id
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
    overdue: bool = strawberry.field(
        description="Due date passed (everywhere on Earth) and not DONE or CANCELLED."
    )
    sensitivity: list[Sensitivity]
    redacted: bool = strawberry.field(
        description="True when title and detail are withheld by the consent policy."
    )
    updated_at: datetime
    blocked_reason: str | None = strawberry.field(description="What a BLOCKED task waits for.")
    source: str = strawberry.field(
        description="Where the task came from: manual, intervention, action_item or review."
    )

    @classmethod
    def seen(cls, task: TaskState, view: View, *, now: datetime) -> Task | None:
        """The card as the viewer may see it (redacted per consent); None when the
        policy refuses it outright."""
        decision = view.item(task.patient_id, task.sensitivity)
        if not decision.permitted:
            return None
        hide = decision.redacted
        return cls(
            id=strawberry.ID(task.id),
            team_id=strawberry.ID(task.team_id),
            patient_id=optional_id(task.patient_id),
            plan_id=optional_id(task.plan_id),
            title=RESTRICTED if hide else task.title,
            status=task.status,
            assignee_id=optional_id(task.assignee_id),
            discipline=task.discipline,
            due_date=task.due_date,
            overdue=task.overdue(now),
            sensitivity=list(task.sensitivity),
            redacted=hide,
            updated_at=task.updated_at,
            blocked_reason=withheld(task.blocked_reason, hide),
            source=task.source,
        )


def cards(tasks: Iterable[TaskState], view: View, *, now: datetime) -> list[Task]:
    """The tasks the viewer may see, in the order given, each as they may see it."""
    return [card for t in tasks if (card := Task.seen(t, view, now=now)) is not None]


@strawberry.type(description="The tasks in one status, by due date (those without one last).")
class BoardColumn:
    status: TaskStatus
    tasks: list[Task]


@strawberry.type(description="A team's board: one column per task status, in status order.")
class Board:
    team_id: strawberry.ID
    columns: list[BoardColumn]
    as_of: datetime = strawberry.field(
        description="When the board was read; `overdue` is judged as of then."
    )


@strawberry.type(description="A change on a team's board, as it happened.")
class BoardEvent:
    team_id: strawberry.ID
    task: Task
    change: str = strawberry.field(description="CREATED | MOVED | UPDATED | REMOVED")
