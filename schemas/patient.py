"""Events of the Patient aggregate."""

from __future__ import annotations

from typing import ClassVar

from schemas.base import Event
from schemas.common import Day, Id, NonEmptyStr


class PatientEnrolled(Event):
    """A patient was enrolled with a care team."""

    event_type: ClassVar[str] = "PatientEnrolled"

    patient_id: Id
    team_id: Id
    mrn: NonEmptyStr
    name: NonEmptyStr
    birth_date: Day
