"""Patients: the Patient type, `patient`, and enrollPatient (the MRN is unique per team)."""

from __future__ import annotations

from datetime import date

import strawberry

from schemas.audit import AccessAction
from services.api.graphql import guard
from services.api.graphql.access import authorize, view
from services.api.graphql.context import Info
from services.api.graphql.guard import present
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.event_store import Claim
from services.common.policy import Action
from services.plans.domain import patient
from services.plans.domain.patient import MRN_CLAIM, PATIENT, mrn_key


@strawberry.type(description="A patient enrolled on a care team.")
class Patient:
    id: strawberry.ID
    team_id: strawberry.ID
    mrn: str
    name: str
    birth_date: date

    @classmethod
    def from_state(cls, loaded: Loaded[patient.Patient]) -> Patient:
        state = present(loaded)
        return cls(
            id=strawberry.ID(state.id),
            team_id=strawberry.ID(state.team_id),
            mrn=state.mrn,
            name=state.name,
            birth_date=state.birth_date,
        )


async def resolve_patient(info: Info, id: strawberry.ID) -> Patient | None:
    loaded, _ = await guard.read(info.context, PATIENT, id, one_patient=True)
    return Patient.from_state(loaded)


async def enroll_patient(
    info: Info, team_id: strawberry.ID, mrn: str, name: str, birth_date: date
) -> Patient:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.WRITE, resource="team")
    patient_id = new_id()
    command = build(
        patient.EnrollPatient,
        patient_id=patient_id,
        team_id=team_id,
        mrn=mrn,
        name=name,
        birth_date=birth_date,
    )
    loaded = await ctx.handler.execute(
        PATIENT,
        patient_id,
        command,
        caller=ctx.caller(),
        scope=Scope(team_id, patient_id),
        claims=[Claim(MRN_CLAIM, mrn_key(team_id, command.mrn))],
        known=NEW,
    )
    await view(ctx, access, AccessAction.CREATE, "Patient", patient_id, {patient_id: frozenset()})
    return Patient.from_state(loaded)


@strawberry.type
class PatientsQuery:
    patient: Patient | None = strawberry.field(resolver=resolve_patient)


@strawberry.type
class PatientsMutation:
    enroll_patient: Patient = strawberry.mutation(
        resolver=enroll_patient,
        description="Enroll a patient on a team; the MRN is unique per team.",
    )
