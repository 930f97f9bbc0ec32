"""The Task aggregate: a card on a team's board, its commands, and the tasks other records start.

Tasks arise from clinicians (createTask) and from other records: an intervention is
carried by a task for its responsible discipline, a huddle's action item by a task, and
each plan review by a "review care plan" task due on the next review date. Those tasks
are written in the same transaction as the record that starts them, so the board never
shows one without the other.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator

from schemas.base import Event
from schemas.careplan import CarePlanReviewed, InterventionAdded
from schemas.common import Discipline, Sensitivity, TaskStatus
from schemas.huddle import ActionItemRaised
from schemas.task import TaskAssigned, TaskCreated, TaskEscalated, TaskMoved, TaskSignalled
from services.common import dates
from services.common.commands import (
    Command,
    IdText,
    OptionalShortText,
    Title,
    UserId,
    distinct,
)
from services.common.domain import AggregateType, Meta, Touched, touched
from services.common.errors import InvalidInput, StateConflict

OPEN = frozenset({TaskStatus.TODO, TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED})
CLOSED = frozenset({TaskStatus.DONE, TaskStatus.CANCELLED})
# A task written down late may already be due: this far back, it shows as overdue at once.
MAX_BACKDATE_DAYS = 30

# Tasks that other records start have ids derived from those records, so that the
# record's later changes (an intervention discontinued, the next review) find them.
_DERIVED = uuid.UUID("8f1d6a52-3c4e-4f7a-9b0e-5d2c7a9e41b3")


def intervention_task_id(intervention_id: str) -> str:
    return str(uuid.uuid5(_DERIVED, f"intervention/{intervention_id}"))


def review_task_id(plan_id: str, review_number: int) -> str:
    return str(uuid.uuid5(_DERIVED, f"review/{plan_id}/{review_number}"))


@dataclass(frozen=True)
class Task:
    id: str
    team_id: str
    title: str
    source: str
    updated_at: datetime
    patient_id: str | None = None
    plan_id: str | None = None
    intervention_id: str | None = None
    huddle_id: str | None = None
    discipline: Discipline | None = None
    assignee_id: str | None = None
    due_date: date | None = None
    sensitivity: tuple[Sensitivity, ...] = ()
    status: TaskStatus = TaskStatus.TODO
    blocked_reason: str | None = None
    created_at: datetime | None = None
    # Signal tasks (source "signal"): how many signals it carries, since when it is urgent
    # (a critical reading), and when it was escalated to the leads.
    signal_count: int = 0
    urgent_since: datetime | None = None
    escalated_at: datetime | None = None

    @property
    def urgent(self) -> bool:
        return self.urgent_since is not None

    def patients(self) -> Touched:
        return touched([(self.patient_id, self.sensitivity)])

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def overdue(self, now: datetime) -> bool:
        """Past its due date everywhere on Earth (UTC-12) and still to be done."""
        if self.due_date is None or not self.open:
            return False
        return self.due_date < dates.earliest_today(now)


# --- commands ------------------------------------------------------------------------

Tags = Annotated[tuple[Sensitivity, ...], AfterValidator(distinct)]


class CreateTask(Command):
    task_id: IdText
    team_id: IdText
    title: Title
    patient_id: IdText | None = None
    discipline: Discipline | None = None
    assignee_id: UserId | None = None
    due_date: date | None = None
    sensitivity: Tags = ()


class MoveTask(Command):
    task_id: IdText
    status: TaskStatus
    reason: OptionalShortText = None


class AssignTask(Command):
    task_id: IdText
    assignee_id: UserId


class EscalateTask(Command):
    """Escalate an urgent task still in TODO `after_seconds` after its urgency began (the
    system's timer sends it; a second sender finds it escalated and changes nothing)."""

    task_id: IdText
    lead_ids: tuple[UserId, ...]
    after_seconds: float


TaskCommand = CreateTask | MoveTask | AssignTask | EscalateTask


def _created(command: CreateTask, now: datetime) -> TaskCreated:
    if command.sensitivity and command.patient_id is None:
        # A tag is released by the patient's consent: about no patient, none can cover it,
        # so the task would be [restricted] to everyone, and changed by no one.
        raise InvalidInput(
            "sensitivity needs patientId: a tagged item is released by the patient's "
            "consent, so a tagged task about no patient could be read and changed by no one."
        )
    dates.due_date(command.due_date, now, days_back=MAX_BACKDATE_DAYS)
    return TaskCreated(
        task_id=command.task_id,
        team_id=command.team_id,
        title=command.title,
        patient_id=command.patient_id,
        discipline=command.discipline,
        assignee_id=command.assignee_id,
        due_date=command.due_date,
        sensitivity=command.sensitivity,
        source="manual",
    )


def _moved(command: MoveTask, task: Task) -> list[Event]:
    target = command.status
    if target is TaskStatus.BLOCKED and command.reason is None:
        raise InvalidInput("reason is required to move a task to BLOCKED: say what it waits for.")
    if target is task.status and not (
        target is TaskStatus.BLOCKED and command.reason != task.blocked_reason
    ):
        return []  # already there (a double click): nothing changes
    if task.status in CLOSED and target not in (TaskStatus.TODO, TaskStatus.IN_PROGRESS):
        raise StateConflict(
            f"Task {task.id} is {task.status.value}; it can only be reopened "
            "(to TODO or IN_PROGRESS)."
        )
    return [TaskMoved(task_id=task.id, status=target, previous=task.status, reason=command.reason)]


def escalation_due(task: Task, now: datetime, after_seconds: float) -> bool:
    """An urgent task still in TODO `after_seconds` after it became urgent, and not
    escalated yet."""
    return (
        task.urgent_since is not None
        and task.status is TaskStatus.TODO
        and task.escalated_at is None
        and now - task.urgent_since >= timedelta(seconds=after_seconds)
    )


def _escalated(command: EscalateTask, task: Task, now: datetime) -> list[Event]:
    if not escalation_due(task, now, command.after_seconds):
        return []  # picked up, escalated already, or not yet due: nothing to do
    assert task.urgent_since is not None
    waited = int((now - task.urgent_since).total_seconds() // 60)
    return [TaskEscalated(task_id=task.id, lead_ids=command.lead_ids, waited_minutes=waited)]


def decide(command: object, task: Task | None, now: datetime) -> Sequence[Event]:
    if isinstance(command, CreateTask):
        if task is not None:
            raise StateConflict(f"Task {command.task_id} already exists.")
        return [_created(command, now)]
    if task is None:
        raise StateConflict("That task does not exist.")
    match command:
        case MoveTask():
            return _moved(command, task)
        case EscalateTask():
            return _escalated(command, task, now)
        case AssignTask():
            if command.assignee_id == task.assignee_id:
                return []  # already theirs: nothing changes
            if not task.open:
                raise StateConflict(
                    f"Task {task.id} is {task.status.value}; reopen it before assigning it."
                )
            return [
                TaskAssigned(
                    task_id=task.id,
                    assignee_id=command.assignee_id,
                    previous_assignee_id=task.assignee_id,
                )
            ]
    raise InvalidInput(f"A task cannot handle {type(command).__name__}.")


def evolve(task: Task | None, event: Event, meta: Meta) -> Task:
    if isinstance(event, TaskCreated):
        return Task(
            id=event.task_id,
            team_id=event.team_id,
            title=event.title,
            source=event.source,
            updated_at=meta.occurred_at,
            created_at=meta.occurred_at,
            patient_id=event.patient_id,
            plan_id=event.plan_id,
            intervention_id=event.intervention_id,
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
        case TaskSignalled():
            urgent_since = task.urgent_since
            if event.urgent and urgent_since is None:
                urgent_since = meta.occurred_at
            return replace(
                task,
                title=event.title,
                signal_count=event.count,
                urgent_since=urgent_since,
                updated_at=meta.occurred_at,
            )
        case TaskEscalated():
            return replace(task, escalated_at=meta.occurred_at, updated_at=meta.occurred_at)
    raise ValueError(f"a task has no {event.event_type} events")


TASK = AggregateType[Task](name="task", stream_prefix="task-", evolve=evolve, decide=decide)


# --- tasks started by other records --------------------------------------------------


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


def from_intervention(added: InterventionAdded, *, team_id: str, patient_id: str) -> TaskCreated:
    """The task for the intervention's responsible discipline, due when it is due and
    tagged as it is."""
    return TaskCreated(
        task_id=intervention_task_id(added.intervention_id),
        team_id=team_id,
        title=added.title,
        patient_id=patient_id,
        plan_id=added.plan_id,
        intervention_id=added.intervention_id,
        discipline=added.responsible_discipline,
        due_date=added.due_date,
        sensitivity=added.sensitivity,
        source="intervention",
    )


def from_review(
    reviewed: CarePlanReviewed, *, plan_title: str, team_id: str, patient_id: str, number: int
) -> TaskCreated:
    """The "review care plan" task of review `number`, due on the next review date."""
    return TaskCreated(
        task_id=review_task_id(reviewed.plan_id, number),
        team_id=team_id,
        title=f"Review care plan: {plan_title}",
        patient_id=patient_id,
        plan_id=reviewed.plan_id,
        due_date=reviewed.next_review_date,
        source="review",
    )


def close(task: Task | None, status: TaskStatus, reason: str) -> TaskMoved | None:
    """Close a task its source no longer needs (DONE or CANCELLED); None when it is
    already closed or does not exist."""
    assert status in CLOSED
    if task is None or not task.open:
        return None
    return TaskMoved(task_id=task.id, status=status, previous=task.status, reason=reason)
