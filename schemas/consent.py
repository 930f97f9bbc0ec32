"""Events of the Consent aggregate: what a patient allows to be shared, with whom, and why."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.base import Event
from schemas.common import Discipline, Id, Instant, Purpose, Sensitivity


class ConsentGranted(Event):
    """A patient consented to release of sensitive categories for purposes and disciplines."""

    event_type: ClassVar[str] = "ConsentGranted"

    consent_id: Id
    patient_id: Id
    # An empty list would be a consent that covers nothing: a mistake, not a choice.
    categories: tuple[Sensitivity, ...] = Field(min_length=1)
    purposes: tuple[Purpose, ...] = Field(min_length=1)
    disciplines: tuple[Discipline, ...] = Field(min_length=1)
    valid_until: Instant | None = None


class ConsentRevoked(Event):
    """A patient withdrew a consent."""

    event_type: ClassVar[str] = "ConsentRevoked"

    consent_id: Id
    patient_id: Id
