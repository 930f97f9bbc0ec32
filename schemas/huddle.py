"""Events of the Huddle aggregate: a team meeting's lifecycle, notes and action items."""

from __future__ import annotations

from typing import ClassVar

from schemas.base import Event
from schemas.common import Day, Discipline, Id, Instant, NonEmptyStr, Sensitivity


class HuddleScheduled(Event):
    """A huddle was scheduled for a team."""

    event_type: ClassVar[str] = "HuddleScheduled"

    huddle_id: Id
    team_id: Id
    scheduled_for: Instant


class HuddleOpened(Event):
    """A huddle started."""

    event_type: ClassVar[str] = "HuddleOpened"

    huddle_id: Id


class HuddleNoteRecorded(Event):
    """A note was taken during a huddle, possibly about one patient."""

    event_type: ClassVar[str] = "HuddleNoteRecorded"

    huddle_id: Id
    note_id: Id
    text: NonEmptyStr
    patient_id: str | None = None
    sensitivity: tuple[Sensitivity, ...] = ()


class ActionItemRaised(Event):
    """A huddle raised an action item; the task with `task_id` carries it on the board."""

    event_type: ClassVar[str] = "ActionItemRaised"

    huddle_id: Id
    task_id: Id
    title: NonEmptyStr
    patient_id: str | None = None
    discipline: Discipline | None = None
    assignee_id: str | None = None
    due_date: Day | None = None


class HuddleClosed(Event):
    """A huddle ended."""

    event_type: ClassVar[str] = "HuddleClosed"

    huddle_id: Id
