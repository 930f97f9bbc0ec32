"""The Observation aggregate: one reading of a measure of the catalogue about a patient,
recorded once and never changed (a wrong reading is corrected by a new one).

Each observation is its own stream, appended as a new aggregate without a read: recording
a reading never contends with another reading of the same patient. The reading is checked
against the catalogue (services.plans.domain.measures): the measure, the unit, a possible
value; and its time: not ahead of the clock by more than CLOCK_SKEW (a device's clock runs
a little fast), not before EARLIEST (a typing slip). The observation carries the measure's
own sensitivity (a PHQ-9 is MENTAL_HEALTH), so the policy decides who sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime

from schemas.base import Event
from schemas.common import Sensitivity
from schemas.observation import ObservationRecorded, ObservationSource
from services.common import dates
from services.common.commands import Command, IdText, OptionalLongText, UserId
from services.common.domain import AggregateType, Meta, Touched
from services.common.errors import InvalidInput, StateConflict
from services.plans.domain import measures

# How far ahead of the server's clock a reading's time may be: devices' clocks drift.
CLOCK_SKEW = timedelta(minutes=5)
# No reading the product holds was taken before this.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Observation:
    id: str
    patient_id: str
    team_id: str
    measure_code: str
    value: float
    unit: str
    canonical_value: float
    canonical_unit: str
    at: datetime
    source: ObservationSource
    recorded_by: str
    recorded_at: datetime
    note: str | None
    sensitivity: tuple[Sensitivity, ...]

    def patients(self) -> Touched:
        return {self.patient_id: frozenset(self.sensitivity)}


class RecordObservation(Command):
    """Record a reading; `recorded_by` is the caller (never an argument of the API)."""

    observation_id: IdText
    patient_id: IdText
    measure_code: IdText
    value: float
    unit: IdText
    at: AwareDatetime
    source: ObservationSource
    recorded_by: UserId
    note: OptionalLongText = None


def decide(command: object, observation: Observation | None, now: datetime) -> Sequence[Event]:
    match command:
        case RecordObservation():
            if observation is not None:
                raise StateConflict(f"Observation {command.observation_id} is already recorded.")
            m = measures.measure(command.measure_code)
            canonical = measures.canonical(m, command.value, command.unit)
            _when(command.at, now)
            return [
                ObservationRecorded(
                    observation_id=command.observation_id,
                    patient_id=command.patient_id,
                    measure_code=m.code,
                    value=command.value,
                    unit=command.unit,
                    canonical_value=canonical,
                    canonical_unit=m.unit,
                    at=command.at,
                    source=command.source,
                    recorded_by=command.recorded_by,
                    note=command.note,
                    sensitivity=m.sensitivity,
                )
            ]
    raise InvalidInput(f"An observation cannot handle {type(command).__name__}.")


def _when(at: datetime, now: datetime) -> None:
    dates.aware(at, argument="at")
    if at > now + CLOCK_SKEW:
        minutes = int(CLOCK_SKEW.total_seconds() // 60)
        raise InvalidInput(
            f"at is in the future: a reading's time may be at most {minutes} minutes ahead "
            "of the server's clock."
        )
    if at < EARLIEST:
        raise InvalidInput(f"at is before {EARLIEST.date().isoformat()}; check the year.")


def evolve(observation: Observation | None, event: Event, meta: Meta) -> Observation:
    match event:
        case ObservationRecorded():
            if observation is not None:
                raise ValueError("ObservationRecorded twice on one stream")
            return Observation(
                id=event.observation_id,
                patient_id=event.patient_id,
                team_id=meta.team_id,
                measure_code=event.measure_code,
                value=event.value,
                unit=event.unit,
                canonical_value=event.canonical_value,
                canonical_unit=event.canonical_unit,
                at=event.at,
                source=event.source,
                recorded_by=event.recorded_by,
                recorded_at=meta.occurred_at,
                note=event.note,
                sensitivity=event.sensitivity,
            )
    raise ValueError(f"an observation has no {event.event_type} events")


OBSERVATION = AggregateType[Observation](
    name="observation", stream_prefix="observation-", evolve=evolve, decide=decide
)
