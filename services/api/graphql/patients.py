"""Patients: the Patient type, `patient`, and enrollPatient (the MRN is unique per team)."""

from __future__ import annotations

from datetime import date

import strawberry

from schemas.audit import AccessAction
from services.api.graphql import freshness, guard, paging
from services.api.graphql.access import Access, authorize, view
from services.api.graphql.care_plans import CarePlan, resolve_care_plans
from services.api.graphql.context import Context, Info
from services.api.graphql.guard import present
from services.api.graphql.scalars import Position
from services.common import directory
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.errors import InvalidInput
from services.common.event_store import Claim
from services.common.policy import Action
from services.plans.domain import patient
from services.plans.domain.patient import MRN_CLAIM, PATIENT, mrn_key


async def _care_plans(
    root: Patient, info: Info, at_least: Position | None = None
) -> list[CarePlan]:
    await freshness.caught_up(info.context, root.team_id, at_least, freshness.EVENT_STORE)
    return await resolve_care_plans(info, root.id)


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

    care_plans: list[CarePlan] = strawberry.field(
        resolver=_care_plans,
        description="The patient's care plans, oldest first (as `carePlans(patientId)`); "
        "read from the event store itself (`atLeast` is only checked to be a position the "
        "store has reached).",
    )


@strawberry.type(description="A page of a team's patients, in the order they were enrolled.")
class PatientPage:
    items: list[Patient]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


MAX_SEARCH = 64


async def team_patients(
    ctx: Context, access: Access, *, first: int | None, after: str | None, search: str | None
) -> PatientPage:
    """The team's patients past the cursor (those `search` finds, when given). Each one
    passes the gate on its own and is one READ access record, so a name or MRN matched is
    shown only to whom the patient may be shown."""
    size = paging.size(first)
    position = paging.decode("patients", after)
    wanted = None if search is None else " ".join(search.split())
    if wanted is not None and not 1 <= len(wanted) <= MAX_SEARCH:
        raise InvalidInput(f"search must hold 1 to {MAX_SEARCH} characters besides spaces.")
    async with ctx.database.acquire() as conn:
        found = await directory.team_patients(
            conn, access.team.id, after=position, limit=size + 1, search=wanted
        )
    page = found[:size]
    loaded = await ctx.repository.load_many(PATIENT, [f.record_id for f in page])
    enrolled = [p for p in loaded if p.state is not None and p.state.team_id == access.team.id]
    shown = await view(
        ctx,
        access,
        AccessAction.READ,
        "Patient",
        None,
        {p.state.id: frozenset() for p in enrolled if p.state is not None},
    )
    items = [
        Patient.from_state(p)
        for p in enrolled
        if p.state is not None and shown.item(p.state.id, ()).permitted
    ]
    more = len(found) > size
    return PatientPage(
        items=items,
        next_cursor=paging.encode("patients", page[-1].position) if more else None,
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
