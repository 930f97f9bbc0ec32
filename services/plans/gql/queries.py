"""Queries of the plans service: team, patient, carePlan, carePlans, huddle, consents."""

from __future__ import annotations

import strawberry

from schemas.audit import AccessAction
from schemas.careplan import CarePlanCreated
from schemas.consent import ConsentGranted
from services.api.access import authorize, view
from services.common.domain import touched
from services.common.policy import Action
from services.plans.domain.careplan import CARE_PLAN
from services.plans.domain.consent import CONSENT
from services.plans.domain.huddle import HUDDLE
from services.plans.domain.patient import PATIENT
from services.plans.domain.team import TEAM
from services.plans.gql import guard
from services.plans.gql.types import CarePlan, Consent, Huddle, Info, Patient, Team

# Unknown ids and ids of other teams' records are both FORBIDDEN (see services.api.access),
# so these nullable fields answer null only where a record has no team to check.


async def resolve_team(info: Info, id: strawberry.ID) -> Team | None:
    ctx = info.context
    ctx.require_actor()
    loaded = await ctx.repository.load(TEAM, id)
    await authorize(
        ctx, team_id=loaded.state.id if loaded.state else None, action=Action.READ, resource="team"
    )
    return Team.from_state(loaded)


async def resolve_patient(info: Info, id: strawberry.ID) -> Patient | None:
    loaded, _ = await guard.read(info.context, PATIENT, id, one_patient=True)
    return Patient.from_state(loaded)


async def resolve_care_plan(info: Info, id: strawberry.ID) -> CarePlan | None:
    loaded, shown = await guard.read(info.context, CARE_PLAN, id, one_patient=True)
    return CarePlan.from_state(loaded, shown)


async def resolve_care_plans(info: Info, patient_id: strawberry.ID) -> list[CarePlan]:
    ctx = info.context
    _, access = await guard.load(ctx, PATIENT, patient_id, Action.READ, one_patient=True)
    ids = await ctx.repository.ids_for_patient(CARE_PLAN, patient_id, CarePlanCreated)
    plans = await ctx.repository.load_many(CARE_PLAN, ids)
    # The answer tells about the patient even when it is empty (no plans).
    held = [(patient_id, s) for p in plans if p.state for s in p.state.patients().values()]
    patients = touched([(patient_id, ()), *held])
    shown = await view(ctx, access, AccessAction.READ, "CarePlan", None, patients)
    return [CarePlan.from_state(p, shown) for p in plans]


async def resolve_huddle(info: Info, id: strawberry.ID) -> Huddle | None:
    loaded, shown = await guard.read(info.context, HUDDLE, id)
    return Huddle.from_state(loaded, shown)


async def resolve_consents(info: Info, patient_id: strawberry.ID) -> list[Consent]:
    ctx = info.context
    _, access = await guard.load(ctx, PATIENT, patient_id, Action.READ, one_patient=True)
    await view(ctx, access, AccessAction.READ, "Consent", None, {patient_id: frozenset()})
    ids = await ctx.repository.ids_for_patient(CONSENT, patient_id, ConsentGranted)
    now = ctx.now()
    return [Consent.from_state(c, now=now) for c in await ctx.repository.load_many(CONSENT, ids)]


@strawberry.type
class PlansQuery:
    team: Team | None = strawberry.field(resolver=resolve_team)
    patient: Patient | None = strawberry.field(resolver=resolve_patient)
    care_plan: CarePlan | None = strawberry.field(resolver=resolve_care_plan)
    care_plans: list[CarePlan] = strawberry.field(
        resolver=resolve_care_plans, description="The patient's care plans, oldest first."
    )
    huddle: Huddle | None = strawberry.field(resolver=resolve_huddle)
    consents: list[Consent] = strawberry.field(
        resolver=resolve_consents,
        description="The patient's consents, oldest first, revoked and expired ones included.",
    )
