"""The Patient aggregate: a person enrolled on one care team."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from schemas.base import Event
from schemas.patient import PatientEnrolled
from services.common import dates
from services.common.commands import Command, IdText, Mrn, Name
from services.common.domain import AggregateType, Meta, Touched
from services.common.errors import InvalidInput, StateConflict

# Nobody alive was born before this; a birth date older than that is a typing error.
OLDEST_AGE_YEARS = 130


@dataclass(frozen=True)
class Patient:
    id: str
    team_id: str
    mrn: str
    name: str
    birth_date: date

    def patients(self) -> Touched:
        return {self.id: frozenset()}


class EnrollPatient(Command):
    """Enroll a patient; the MRN must be unique on the team (the handler claims it)."""

    patient_id: IdText
    team_id: IdText
    mrn: Mrn
    name: Name
    birth_date: date


def decide(command: object, patient: Patient | None, now: datetime) -> Sequence[Event]:
    match command:
        case EnrollPatient():
            if patient is not None:
                raise StateConflict(f"Patient {command.patient_id} is already enrolled.")
            # A newborn's birth date is today somewhere; tomorrow nowhere.
            if command.birth_date > dates.latest_today(now):
                raise InvalidInput("birthDate is in the future.")
            if command.birth_date < dates.years_later(dates.earliest_today(now), -OLDEST_AGE_YEARS):
                raise InvalidInput(
                    f"birthDate is more than {OLDEST_AGE_YEARS} years ago; check the year."
                )
            return [
                PatientEnrolled(
                    patient_id=command.patient_id,
                    team_id=command.team_id,
                    mrn=command.mrn,
                    name=command.name,
                    birth_date=command.birth_date,
                )
            ]
    raise InvalidInput(f"A patient cannot handle {type(command).__name__}.")


def evolve(patient: Patient | None, event: Event, meta: Meta | None = None) -> Patient:
    del meta  # nothing here depends on who or when
    match event:
        case PatientEnrolled():
            return Patient(
                id=event.patient_id,
                team_id=event.team_id,
                mrn=event.mrn,
                name=event.name,
                birth_date=event.birth_date,
            )
    raise ValueError(f"a patient has no {event.event_type} events")


# The claim that keeps an MRN unique on its team, and what its being taken means in words
# for the caller (never the MRN itself).
MRN_CLAIM = "patient_mrn"
CLAIM_MESSAGES = {MRN_CLAIM: "A patient with this MRN is already enrolled on this team."}


def mrn_key(team_id: str, mrn: str) -> str:
    """What must be unique: the MRN on its team, compared without case or spaces."""
    return f"{team_id}\x1f{''.join(mrn.split()).upper()}"


PATIENT = AggregateType[Patient](
    name="patient", stream_prefix="patient-", evolve=evolve, decide=decide
)
