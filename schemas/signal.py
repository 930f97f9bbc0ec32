"""Events of the Signal aggregate: one per monitoring plan (`signal-<monitoring id>`), the
readings out of range (or the silence) the care team has been told of, and the board task
that carries them."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from schemas.base import Event
from schemas.common import Id, Instant


class SignalStatus(StrEnum):
    """Where a monitoring plan stands: its latest reading's place against the thresholds,
    or no reading for too long, or none ever."""

    IN_RANGE = "IN_RANGE"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    CRITICAL = "CRITICAL"
    READING_OVERDUE = "READING_OVERDUE"
    NO_DATA = "NO_DATA"


class SignalRaised(Event):
    """A monitoring plan signalled: a reading out of range or critical (`observation_id`,
    store position `observation_position`), or no reading since `silent_since`
    (READING_OVERDUE). `task_id` is the open signal task that now carries it, `count` how
    many signals that task has carried."""

    event_type: ClassVar[str] = "SignalRaised"

    monitoring_id: Id
    plan_id: Id
    patient_id: Id
    task_id: Id
    status: SignalStatus
    count: int = Field(ge=1)
    observation_id: str | None = None
    observation_position: int | None = Field(default=None, ge=1)
    silent_since: Instant | None = None


class SignalsStopped(Event):
    """A monitoring plan will signal no more: it was stopped, or its care plan completed or
    revoked (`reason`). Written on its Signal stream with the cancelling of its open task,
    so a signal still on its way finds the stream changed and the plan ended."""

    event_type: ClassVar[str] = "SignalsStopped"

    monitoring_id: Id
    plan_id: Id
    patient_id: Id
    reason: str = Field(min_length=1, max_length=200)
