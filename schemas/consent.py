"""Events of the Consent aggregate: what a patient allows to be shared, with whom, and why.

v2 of both events carries `evidence`, the id of the patient's signed form (or of the
signed withdrawal). Who documented it is the envelope's actor. Events stored as v1 are
read as v2 with `evidence` null: they were recorded before evidence was asked for.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from schemas.base import Event
from schemas.common import Discipline, Id, Instant, Purpose, Sensitivity


# v1: as recorded before evidence was asked for; kept to read old streams (and its schema).
class ConsentGrantedV1(Event):
    """A patient consented to release of sensitive categories for purposes and disciplines."""

    model_config = ConfigDict(title="ConsentGranted")  # as v1's published schema names it
    event_type: ClassVar[str] = "ConsentGranted"

    consent_id: Id
    patient_id: Id
    # An empty list would be a consent that covers nothing: a mistake, not a choice.
    categories: tuple[Sensitivity, ...] = Field(min_length=1)
    purposes: tuple[Purpose, ...] = Field(min_length=1)
    disciplines: tuple[Discipline, ...] = Field(min_length=1)
    valid_until: Instant | None = None


class ConsentGranted(Event):
    """A patient consented to release of sensitive categories for purposes and disciplines,
    on the evidence of a signed form."""

    event_type: ClassVar[str] = "ConsentGranted"
    schema_version: ClassVar[int] = 2

    consent_id: Id
    patient_id: Id
    categories: tuple[Sensitivity, ...] = Field(min_length=1)
    purposes: tuple[Purpose, ...] = Field(min_length=1)
    disciplines: tuple[Discipline, ...] = Field(min_length=1)
    valid_until: Instant | None = None
    # The id of the patient's signed consent form; null only on a consent upcast from v1.
    evidence: Id | None


class ConsentRevokedV1(Event):
    """A patient withdrew a consent."""

    model_config = ConfigDict(title="ConsentRevoked")  # as v1's published schema names it
    event_type: ClassVar[str] = "ConsentRevoked"

    consent_id: Id
    patient_id: Id


class ConsentRevoked(Event):
    """A patient withdrew a consent, on the evidence of a signed withdrawal."""

    event_type: ClassVar[str] = "ConsentRevoked"
    schema_version: ClassVar[int] = 2

    consent_id: Id
    patient_id: Id
    # The id of the patient's signed withdrawal; null only on a revocation upcast from v1.
    evidence: Id | None


def without_evidence(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of ConsentGranted and ConsentRevoked: no evidence was recorded."""
    return {**payload, "evidence": None}
