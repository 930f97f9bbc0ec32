"""Events of the Observation aggregate: one reading of a measure of the catalogue about a
patient (a glucose, a blood pressure, a PHQ-9 total), as recorded.

Each observation is its own stream (`observation-<id>`), written once and never changed;
a patient's observations are found by the envelope's patient id and this event type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from schemas.base import Event
from schemas.common import Id, Instant, NonEmptyStr, Sensitivity


class ObservationSource(StrEnum):
    CLINIC = "CLINIC"
    PATIENT_REPORTED = "PATIENT_REPORTED"
    DEVICE = "DEVICE"


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class ObservationRecorded(Event):
    """A reading of a measure about a patient was recorded, in the unit it was given in and
    in the measure's canonical unit (the one thresholds and targets are kept in)."""

    event_type: ClassVar[str] = "ObservationRecorded"

    observation_id: Id
    patient_id: Id
    measure_code: Id  # LOINC
    value: FiniteFloat
    unit: NonEmptyStr  # UCUM, as given
    canonical_value: FiniteFloat
    canonical_unit: NonEmptyStr
    at: Instant  # when it was measured (not when it was recorded: the envelope says that)
    source: ObservationSource
    recorded_by: Id
    note: str | None = Field(default=None, max_length=4_000)
    # The measure's own sensitivity (a PHQ-9 carries MENTAL_HEALTH).
    sensitivity: tuple[Sensitivity, ...] = ()
