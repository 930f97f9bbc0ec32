"""Consent: the Consent type, `consents`, and grantConsent / revokeConsent. A patient's
consents decide what of their sensitive items each discipline sees (services.common.policy)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schemas.audit import AccessAction
from schemas.consent import ConsentGranted
from services.api.graphql import guard
from services.api.graphql.access import view
from services.api.graphql.context import Info
from services.api.graphql.guard import present
from services.api.graphql.scalars import Discipline, Purpose, Sensitivity
from services.common import dates
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.policy import Action
from services.plans.domain import consent
from services.plans.domain.consent import CONSENT
from services.plans.domain.patient import PATIENT


@strawberry.type(description="A patient's consent to share sensitive categories.")
class Consent:
    id: strawberry.ID
    patient_id: strawberry.ID
    categories: list[Sensitivity]
    purposes: list[Purpose]
    disciplines: list[Discipline]
    valid_until: datetime | None
    active: bool
    granted_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_state(cls, loaded: Loaded[consent.Consent], *, now: datetime) -> Consent:
        state = present(loaded)
        return cls(
            id=strawberry.ID(state.id),
            patient_id=strawberry.ID(state.patient_id),
            categories=list(state.categories),
            purposes=list(state.purposes),
            disciplines=list(state.disciplines),
            valid_until=state.valid_until,
            active=state.active(now),
            granted_at=state.granted_at,
            revoked_at=state.revoked_at,
        )


async def resolve_consents(info: Info, patient_id: strawberry.ID) -> list[Consent]:
    ctx = info.context
    _, access = await guard.load(ctx, PATIENT, patient_id, Action.READ, one_patient=True)
    await view(ctx, access, AccessAction.READ, "Consent", None, {patient_id: frozenset()})
    ids = await ctx.repository.ids_for_patient(CONSENT, patient_id, ConsentGranted)
    now = ctx.now()
    return [Consent.from_state(c, now=now) for c in await ctx.repository.load_many(CONSENT, ids)]


async def grant_consent(
    info: Info,
    patient_id: strawberry.ID,
    categories: list[Sensitivity],
    purposes: list[Purpose],
    disciplines: list[Discipline],
    valid_until: datetime | None = None,
) -> Consent:
    ctx = info.context
    enrolled, access = await guard.load(ctx, PATIENT, patient_id, Action.WRITE, one_patient=True)
    assert enrolled.state is not None
    if valid_until is not None:
        dates.aware(valid_until, argument="validUntil")
    consent_id = new_id()
    command = build(
        consent.GrantConsent,
        consent_id=consent_id,
        patient_id=patient_id,
        categories=tuple(categories),
        purposes=tuple(purposes),
        disciplines=tuple(disciplines),
        valid_until=valid_until,
    )
    loaded = await ctx.handler.execute(
        CONSENT,
        consent_id,
        command,
        caller=ctx.caller(),
        scope=Scope(enrolled.state.team_id, patient_id),
        known=NEW,
    )
    await guard.changed(ctx, access, CONSENT, consent_id, loaded, created=True)
    return Consent.from_state(loaded, now=ctx.now())


async def revoke_consent(info: Info, consent_id: strawberry.ID) -> Consent:
    ctx = info.context
    current, access = await guard.load(ctx, CONSENT, consent_id, Action.WRITE, one_patient=True)
    assert current.state is not None
    command = build(consent.RevokeConsent, consent_id=consent_id)
    loaded = await ctx.handler.execute(
        CONSENT,
        consent_id,
        command,
        caller=ctx.caller(),
        scope=Scope(current.state.team_id, current.state.patient_id),
        known=current,
    )
    await guard.changed(ctx, access, CONSENT, consent_id, loaded)
    return Consent.from_state(loaded, now=ctx.now())


@strawberry.type
class ConsentsQuery:
    consents: list[Consent] = strawberry.field(
        resolver=resolve_consents,
        description="The patient's consents, oldest first, revoked and expired ones included.",
    )


@strawberry.type
class ConsentsMutation:
    grant_consent: Consent = strawberry.mutation(resolver=grant_consent)
    revoke_consent: Consent = strawberry.mutation(resolver=revoke_consent)
