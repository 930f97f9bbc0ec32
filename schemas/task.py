"""Events of the Task aggregate: the cards on a team's board."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.base import Event
from schemas.common import Day, Discipline, Id, NonEmptyStr, Sensitivity, TaskStatus

# Where a task came from. Kept a plain `str` for callers; the pattern keeps unknown
# sources out of the log (adding one later widens the pattern, no new schema version).
TASK_SOURCES = ("manual", "intervention", "action_item", "review", "signal")


class TaskCreated(Event):
    """A task was put on a team's board."""

    event_type: ClassVar[str] = "TaskCreated"

    task_id: Id
    team_id: Id
    title: NonEmptyStr
    patient_id: str | None = None
    plan_id: str | None = None
    intervention_id: str | None = None
    huddle_id: str | None = None
    discipline: Discipline | None = None
    assignee_id: str | None = None
    due_date: Day | None = None
    sensitivity: tuple[Sensitivity, ...] = ()
    source: str = Field(pattern="^(" + "|".join(TASK_SOURCES) + ")$")


class TaskMoved(Event):
    """A task moved to another column of the board."""

    event_type: ClassVar[str] = "TaskMoved"

    task_id: Id
    status: TaskStatus
    # Kept so that board projections can move the card without looking it up first.
    previous: TaskStatus
    reason: str | None = None


class TaskAssigned(Event):
    """A task was given to a team member."""

    event_type: ClassVar[str] = "TaskAssigned"

    task_id: Id
    assignee_id: Id
    previous_assignee_id: str | None = None


class TaskSignalled(Event):
    """A signal task (source "signal") was told of a signal: its title now names the
    latest one, `count` signals so far; `urgent` once any of them was critical."""

    event_type: ClassVar[str] = "TaskSignalled"

    task_id: Id
    title: NonEmptyStr
    count: int = Field(ge=1)
    urgent: bool = False


class TaskEscalated(Event):
    """An urgent task left in TODO too long was escalated to the team's leads."""

    event_type: ClassVar[str] = "TaskEscalated"

    task_id: Id
    lead_ids: tuple[Id, ...]
    waited_minutes: int = Field(ge=0)
