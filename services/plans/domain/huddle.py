"""The Huddle aggregate: a team meeting from schedule to close, its notes and action items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

from schemas.base import Event
from schemas.common import Discipline, Sensitivity
from schemas.huddle import (
    ActionItemRaised,
    HuddleClosed,
    HuddleNoteRecorded,
    HuddleOpened,
    HuddleScheduled,
)
from services.common import dates
from services.common.commands import Command, IdText, NoteText, Title, UserId, distinct
from services.common.domain import AggregateType, Meta, Touched, touched
from services.common.errors import InvalidInput, StateConflict

# A huddle held earlier today may still be entered afterwards; further back is a typo.
MAX_SCHEDULE_PAST = timedelta(days=1)
MAX_SCHEDULE_AHEAD = timedelta(days=366)


class HuddleStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class Note:
    id: str
    author_id: str
    text: str
    patient_id: str | None
    sensitivity: tuple[Sensitivity, ...]
    at: datetime


@dataclass(frozen=True)
class ActionItem:
    task_id: str
    title: str
    patient_id: str | None
    discipline: Discipline | None
    assignee_id: str | None
    due_date: date | None


@dataclass(frozen=True)
class Huddle:
    id: str
    team_id: str
    scheduled_for: datetime
    status: HuddleStatus = HuddleStatus.SCHEDULED
    notes: tuple[Note, ...] = ()
    action_items: tuple[ActionItem, ...] = ()

    def patients(self) -> Touched:
        return touched(
            [(n.patient_id, n.sensitivity) for n in self.notes]
            + [(a.patient_id, ()) for a in self.action_items]
        )


class ScheduleHuddle(Command):
    huddle_id: IdText
    team_id: IdText
    at: AwareDatetime


class OpenHuddle(Command):
    huddle_id: IdText


class RecordHuddleNote(Command):
    """A note, optionally about a patient of the team (the handler checks that)."""

    huddle_id: IdText
    note_id: IdText
    text: NoteText
    patient_id: IdText | None = None
    sensitivity: Annotated[tuple[Sensitivity, ...], AfterValidator(distinct)] = ()


class RaiseActionItem(Command):
    """An action item; `task_id` names the task that carries it on the board."""

    huddle_id: IdText
    task_id: IdText
    title: Title
    patient_id: IdText | None = None
    discipline: Discipline | None = None
    assignee_id: UserId | None = None
    due_date: date | None = None


class CloseHuddle(Command):
    huddle_id: IdText


def decide(command: object, huddle: Huddle | None, now: datetime) -> Sequence[Event]:
    if isinstance(command, ScheduleHuddle):
        if huddle is not None:
            raise StateConflict(f"Huddle {command.huddle_id} is already scheduled.")
        if command.at < now - MAX_SCHEDULE_PAST:
            raise InvalidInput("at is more than a day in the past.")
        if command.at > now + MAX_SCHEDULE_AHEAD:
            raise InvalidInput("at is more than a year away.")
        return [
            HuddleScheduled(
                huddle_id=command.huddle_id, team_id=command.team_id, scheduled_for=command.at
            )
        ]
    if huddle is None:
        raise StateConflict("That huddle does not exist.")
    match command:
        case OpenHuddle():
            if huddle.status is not HuddleStatus.SCHEDULED:
                raise StateConflict(f"Huddle {huddle.id} is {huddle.status.value}, not SCHEDULED.")
            return [HuddleOpened(huddle_id=huddle.id)]
        case CloseHuddle():
            if huddle.status is not HuddleStatus.OPEN:
                raise StateConflict(
                    f"Huddle {huddle.id} is {huddle.status.value}; only an OPEN huddle closes."
                )
            return [HuddleClosed(huddle_id=huddle.id)]
    # Notes and action items: while scheduled (preparing) or open, never once closed.
    if huddle.status is HuddleStatus.CLOSED:
        raise StateConflict(f"Huddle {huddle.id} is closed; nothing more can be added to it.")
    match command:
        case RecordHuddleNote():
            if any(n.id == command.note_id for n in huddle.notes):
                raise StateConflict(f"Note {command.note_id} is already recorded.")
            if command.sensitivity and command.patient_id is None:
                raise InvalidInput(
                    "sensitivity needs patientId: a tagged note is released by the "
                    "patient's consent, so a tagged note about no patient could be read by "
                    "no one."
                )
            return [
                HuddleNoteRecorded(
                    huddle_id=huddle.id,
                    note_id=command.note_id,
                    text=command.text,
                    patient_id=command.patient_id,
                    sensitivity=command.sensitivity,
                )
            ]
        case RaiseActionItem():
            if any(a.task_id == command.task_id for a in huddle.action_items):
                raise StateConflict(f"Action item {command.task_id} is already raised.")
            dates.due_date(command.due_date, now)
            return [
                ActionItemRaised(
                    huddle_id=huddle.id,
                    task_id=command.task_id,
                    title=command.title,
                    patient_id=command.patient_id,
                    discipline=command.discipline,
                    assignee_id=command.assignee_id,
                    due_date=command.due_date,
                )
            ]
    raise InvalidInput(f"A huddle cannot handle {type(command).__name__}.")


def evolve(huddle: Huddle | None, event: Event, meta: Meta) -> Huddle:
    if isinstance(event, HuddleScheduled):
        return Huddle(id=event.huddle_id, team_id=event.team_id, scheduled_for=event.scheduled_for)
    if huddle is None:
        raise ValueError(f"{event.event_type} before HuddleScheduled")
    match event:
        case HuddleOpened():
            return replace(huddle, status=HuddleStatus.OPEN)
        case HuddleClosed():
            return replace(huddle, status=HuddleStatus.CLOSED)
        case HuddleNoteRecorded():
            note = Note(
                id=event.note_id,
                author_id=meta.actor_id,
                text=event.text,
                patient_id=event.patient_id,
                sensitivity=event.sensitivity,
                at=meta.occurred_at,
            )
            return replace(huddle, notes=(*huddle.notes, note))
        case ActionItemRaised():
            item = ActionItem(
                task_id=event.task_id,
                title=event.title,
                patient_id=event.patient_id,
                discipline=event.discipline,
                assignee_id=event.assignee_id,
                due_date=event.due_date,
            )
            return replace(huddle, action_items=(*huddle.action_items, item))
    raise ValueError(f"a huddle has no {event.event_type} events")


HUDDLE = AggregateType[Huddle](name="huddle", stream_prefix="huddle-", evolve=evolve, decide=decide)
