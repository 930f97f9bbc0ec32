"""The Task aggregate: a card on a team's board, rebuilt from its events."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from schemas.base import Event
from schemas.common import Discipline, Sensitivity, TaskStatus
from schemas.huddle import ActionItemRaised
from schemas.task import TaskAssigned, TaskCreated, TaskMoved
from services.common import dates
from services.common.domain import AggregateType, Meta


@dataclass(frozen=True)
class Task:
    id: str
    team_id: str
    title: str
    source: str
    updated_at: datetime
    patient_id: str | None = None
    plan_id: str | None = None
    huddle_id: str | None = None
    discipline: Discipline | None = None
    assignee_id: str | None = None
    due_date: date | None = None
    sensitivity: tuple[Sensitivity, ...] = ()
    status: TaskStatus = TaskStatus.TODO
    blocked_reason: str | None = None

    def overdue(self, now: datetime) -> bool:
        """Past its due date everywhere on Earth (UTC-12) and still to be done."""
        if self.due_date is None or self.status in (TaskStatus.DONE, TaskStatus.CANCELLED):
            return False
        return self.due_date < dates.earliest_today(now)


def from_action_item(item: ActionItemRaised, *, team_id: str) -> TaskCreated:
    """The task that carries a huddle's action item on the team's board."""
    return TaskCreated(
        task_id=item.task_id,
        team_id=team_id,
        title=item.title,
        patient_id=item.patient_id,
        huddle_id=item.huddle_id,
        discipline=item.discipline,
        assignee_id=item.assignee_id,
        due_date=item.due_date,
        source="action_item",
    )


def evolve(task: Task | None, event: Event, meta: Meta) -> Task:
    if isinstance(event, TaskCreated):
        return Task(
            id=event.task_id,
            team_id=event.team_id,
            title=event.title,
            source=event.source,
            updated_at=meta.occurred_at,
            patient_id=event.patient_id,
            plan_id=event.plan_id,
            huddle_id=event.huddle_id,
            discipline=event.discipline,
            assignee_id=event.assignee_id,
            due_date=event.due_date,
            sensitivity=event.sensitivity,
        )
    if task is None:
        raise ValueError(f"{event.event_type} before TaskCreated")
    match event:
        case TaskMoved():
            reason = event.reason if event.status is TaskStatus.BLOCKED else None
            return replace(
                task, status=event.status, blocked_reason=reason, updated_at=meta.occurred_at
            )
        case TaskAssigned():
            return replace(task, assignee_id=event.assignee_id, updated_at=meta.occurred_at)
    raise ValueError(f"a task has no {event.event_type} events")


TASK = AggregateType[Task](name="task", stream_prefix="task-", evolve=evolve)
