"""The Consent aggregate: what a patient allows to be shared, with which disciplines, why.

A consent is documented on evidence, the id of the patient's signed form (a withdrawal on
that of the signed withdrawal); who documented it is the command's caller, the events'
actor, never an argument. Who may document it is the access gate's question
(services.common.policy.consent_entry)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

from schemas.base import Event
from schemas.common import Discipline, Purpose, Sensitivity
from schemas.consent import ConsentGranted, ConsentRevoked
from services.common import dates
from services.common.commands import Command, IdText, distinct
from services.common.domain import AggregateType, Meta, Touched
from services.common.errors import InvalidInput, StateConflict


@dataclass(frozen=True)
class Consent:
    id: str
    patient_id: str
    team_id: str
    categories: tuple[Sensitivity, ...]
    purposes: tuple[Purpose, ...]
    disciplines: tuple[Discipline, ...]
    valid_until: datetime | None
    granted_at: datetime
    granted_by: str
    revoked_at: datetime | None = None
    # The signed form's id (None: documented before evidence was asked for).
    evidence: str | None = None
    revoked_by: str | None = None
    revocation_evidence: str | None = None

    def patients(self) -> Touched:
        return {self.patient_id: frozenset()}

    def active(self, now: datetime) -> bool:
        """In force: not revoked, and not past its end."""
        if self.revoked_at is not None:
            return False
        return self.valid_until is None or now < self.valid_until


class GrantConsent(Command):
    consent_id: IdText
    patient_id: IdText
    categories: Annotated[tuple[Sensitivity, ...], Field(min_length=1), AfterValidator(distinct)]
    purposes: Annotated[tuple[Purpose, ...], Field(min_length=1), AfterValidator(distinct)]
    disciplines: Annotated[tuple[Discipline, ...], Field(min_length=1), AfterValidator(distinct)]
    valid_until: AwareDatetime | None = None
    # The id of the patient's signed consent form.
    evidence: IdText


class RevokeConsent(Command):
    consent_id: IdText
    # The id of the patient's signed withdrawal of the consent.
    evidence: IdText


def decide(command: object, consent: Consent | None, now: datetime) -> Sequence[Event]:
    match command:
        case GrantConsent():
            if consent is not None:
                raise StateConflict(f"Consent {command.consent_id} already exists.")
            dates.future_instant(command.valid_until, now, argument="validUntil")
            return [
                ConsentGranted(
                    consent_id=command.consent_id,
                    patient_id=command.patient_id,
                    categories=command.categories,
                    purposes=command.purposes,
                    disciplines=command.disciplines,
                    valid_until=command.valid_until,
                    evidence=command.evidence,
                )
            ]
        case RevokeConsent():
            if consent is None:
                raise StateConflict("That consent does not exist.")
            if consent.revoked_at is not None:
                raise StateConflict(f"Consent {consent.id} is already revoked.")
            # An expired consent may still be revoked: the withdrawal is worth recording.
            return [
                ConsentRevoked(
                    consent_id=consent.id, patient_id=consent.patient_id, evidence=command.evidence
                )
            ]
    raise InvalidInput(f"A consent cannot handle {type(command).__name__}.")


def evolve(consent: Consent | None, event: Event, meta: Meta) -> Consent:
    match event:
        case ConsentGranted():
            return Consent(
                id=event.consent_id,
                patient_id=event.patient_id,
                team_id=meta.team_id,
                categories=event.categories,
                purposes=event.purposes,
                disciplines=event.disciplines,
                valid_until=event.valid_until,
                granted_at=meta.occurred_at,
                granted_by=meta.actor_id,
                evidence=event.evidence,
            )
        case ConsentRevoked():
            if consent is None:
                raise ValueError("ConsentRevoked before ConsentGranted")
            return replace(
                consent,
                revoked_at=meta.occurred_at,
                revoked_by=meta.actor_id,
                revocation_evidence=event.evidence,
            )
    raise ValueError(f"a consent has no {event.event_type} events")


CONSENT = AggregateType[Consent](
    name="consent", stream_prefix="consent-", evolve=evolve, decide=decide
)
