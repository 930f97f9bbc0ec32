"""Consent: the Consent type, `consents`, and grantConsent / revokeConsent. A patient's
consents decide what of their sensitive items each discipline sees (services.common.policy).

A consent is the patient's decision: it is documented by the caller (never an argument),
when the policy entitles them to (access.consent_entry), on the evidence of the patient's
signed form. `evidence` is optional in the schema so that calls written to the first
contract still validate; without it they are refused with BAD_USER_INPUT saying what to
send."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schemas.audit import AccessAction
from schemas.consent import ConsentGranted
from services.api.graphql import guard
from services.api.graphql.access import consent_entry, view
from services.api.graphql.context import Info
from services.api.graphql.guard import present
from services.api.graphql.scalars import Discipline, Purpose, Sensitivity
from services.common import dates
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.errors import InvalidInput
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
    granted_by: strawberry.ID = strawberry.field(
        description="Who documented the consent: the signed-in user who recorded it."
    )
    evidence: str | None = strawberry.field(
        description="The id of the patient's signed consent form (null on consents "
        "recorded before it was asked for)."
    )
    revoked_by: strawberry.ID | None = strawberry.field(
        description="Who documented the withdrawal, if revoked."
    )
    revocation_evidence: str | None = strawberry.field(
        description="The id of the patient's signed withdrawal, if revoked."
    )

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
            granted_by=strawberry.ID(state.granted_by),
            evidence=state.evidence,
            revoked_by=strawberry.ID(state.revoked_by) if state.revoked_by else None,
            revocation_evidence=state.revocation_evidence,
        )


async def resolve_consents(info: Info, patient_id: strawberry.ID) -> list[Consent]:
    ctx = info.context
    _, access = await guard.load(ctx, PATIENT, patient_id, Action.READ, one_patient=True)
    await view(ctx, access, AccessAction.READ, "Consent", None, {patient_id: frozenset()})
    ids = await ctx.repository.ids_for_patient(CONSENT, patient_id, ConsentGranted)
    now = ctx.now()
    return [Consent.from_state(c, now=now) for c in await ctx.repository.load_many(CONSENT, ids)]


Evidence = Annotated[
    str | None,
    strawberry.argument(
        description="Required: the id of the patient's signed form (consent, or withdrawal) "
        "in the hospital's records. Who documented it is the signed-in caller."
    ),
]


def _required(evidence: str | None, mutation: str, form: str) -> None:
    if evidence is None:
        raise InvalidInput(
            f"{mutation} needs evidence: the id of the patient's signed {form}, as filed "
            "in the hospital's records."
        )


async def grant_consent(
    info: Info,
    patient_id: strawberry.ID,
    categories: list[Sensitivity],
    purposes: list[Purpose],
    disciplines: list[Discipline],
    valid_until: datetime | None = None,
    evidence: Evidence = None,
) -> Consent:
    ctx = info.context
    enrolled, access = await guard.load(ctx, PATIENT, patient_id, Action.WRITE, one_patient=True)
    assert enrolled.state is not None
    await consent_entry(
        ctx, access, patient_id=patient_id, consent_id=None, disciplines=disciplines
    )
    _required(evidence, "grantConsent", "consent form")
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
        evidence=evidence,
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


async def revoke_consent(
    info: Info, consent_id: strawberry.ID, evidence: Evidence = None
) -> Consent:
    ctx = info.context
    current, access = await guard.load(ctx, CONSENT, consent_id, Action.WRITE, one_patient=True)
    assert current.state is not None
    await consent_entry(
        ctx,
        access,
        patient_id=current.state.patient_id,
        consent_id=consent_id,
        disciplines=current.state.disciplines,
        revoking=True,
    )
    _required(evidence, "revokeConsent", "withdrawal of the consent")
    command = build(consent.RevokeConsent, consent_id=consent_id, evidence=evidence)
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
    grant_consent: Consent = strawberry.mutation(
        resolver=grant_consent,
        description="Document the patient's consent, with the id of their signed form "
        "(`evidence`). Leads and the disciplines the deployment entitles only; never a "
        "consent naming a discipline you hold (another entitled member documents it).",
    )
    revoke_consent: Consent = strawberry.mutation(
        resolver=revoke_consent,
        description="Document the patient's withdrawal of a consent, with the id of the "
        "signed withdrawal (`evidence`). Leads and the disciplines the deployment entitles.",
    )
