"""What the board projector publishes to care.board-updates for the API's subscribers."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Day, Discipline, Id, Instant, NonEmptyStr, Sensitivity, TaskStatus


class BoardChange(StrEnum):
    CREATED = "CREATED"
    MOVED = "MOVED"
    UPDATED = "UPDATED"
    REMOVED = "REMOVED"


class TaskCard(BaseModel):
    """A task as the board shows it, whole, so a subscriber needs no read to show it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: Id
    team_id: Id
    title: NonEmptyStr
    source: NonEmptyStr
    status: TaskStatus
    created_at: Instant
    updated_at: Instant
    patient_id: str | None = None
    plan_id: str | None = None
    intervention_id: str | None = None
    huddle_id: str | None = None
    discipline: Discipline | None = None
    assignee_id: str | None = None
    due_date: Day | None = None
    sensitivity: tuple[Sensitivity, ...] = ()
    blocked_reason: str | None = None
    signal_count: int = 0
    urgent_since: Instant | None = None
    escalated_at: Instant | None = None


class BoardUpdate(BaseModel):
    """One change a team's subscribers hear of: a task card (kind "task"), a huddle to
    re-read ("huddle"), a roster that lost a member ("roster"), a goal whose progress
    moved ("goal"), or a patient whose consents changed, so that every card about them is
    decided again ("consent")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Increases per team in publishing order; a repeat (at-least-once) is dropped by it.
    seq: int = Field(ge=1, strict=True)
    team_id: Id
    kind: Literal["task", "huddle", "roster", "goal", "consent"]
    change: BoardChange | None = None
    task: TaskCard | None = None
    huddle_id: str | None = None
    # kind "goal": the goal whose progress a reading moved, and its plan.
    plan_id: str | None = None
    goal_id: str | None = None
    # kind "consent": the patient whose cards are to be decided again, and those cards
    # (the ones tagged with a sensitivity, open or closed lately) as they stand then; many
    # cards come in several updates at one position, `change` UPDATED on all but the last.
    patient_id: str | None = None
    tasks: tuple[TaskCard, ...] = ()
    # The event-store position of the event this change comes from: a subscriber resumes
    # after it (replayed from the board's change log). None for a change no event made
    # (a task that became overdue as the days passed).
    position: int | None = Field(default=None, ge=1, strict=True)
