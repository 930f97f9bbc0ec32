"""The audit log's GraphQL types, queries and break-glass review, for compliance officers only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schemas.audit import AccessAction
from services.api.graphql.access import compliance_officer, note
from services.api.graphql.context import Info
from services.api.graphql.scalars import AccessOutcome, Purpose, Sensitivity, optional_id
from services.audit import records
from services.audit.reports import Found, TrailFilter
from services.audit.review import REVIEW, MarkReviewed, parse_seq
from services.common import policy
from services.common.aggregates import NEW, Scope
from services.common.commands import build
from services.common.domain import NOTHING
from services.common.errors import InvalidInput, NotPermitted, StateConflict
from services.plans.domain.patient import PATIENT

MAX_PAGE = 1000


@strawberry.type(description="A compliance officer's review of a break-glass access.")
class BreakGlassReview:
    reviewer_id: strawberry.ID
    disposition: str
    at: datetime


async def _review(root: AuditEntry, info: Info) -> BreakGlassReview | None:
    if root.outcome is not AccessOutcome.BREAK_GLASS:
        return None
    review = (await info.context.repository.load(REVIEW, root.seq)).state
    if review is None:
        return None
    return BreakGlassReview(
        reviewer_id=strawberry.ID(review.reviewer_id),
        disposition=review.disposition,
        at=review.reviewed_at,
    )


@strawberry.type(description="One access to patient data, as the audit log holds it.")
class AuditEntry:
    seq: strawberry.ID = strawberry.field(
        description="The entry's place in the log, 'chain:sequence' (e.g. '2:17')."
    )
    chain: int
    at: datetime
    actor_id: strawberry.ID
    actor_name: str
    patient_id: strawberry.ID | None
    action: str = strawberry.field(
        description="read, create, update, delete, export, subscribe-push, or sign-in (a "
        "refused sign-in: a security event, outcome DENY)."
    )
    resource: str = strawberry.field(description="What was reached, e.g. 'CarePlan/<id>'.")
    purpose: Purpose
    outcome: AccessOutcome
    reason: str | None
    sensitivity: list[Sensitivity]
    client_address: str | None = strawberry.field(
        description="The client's network address, as the API saw it."
    )
    claimed_subject: str | None = strawberry.field(
        description="Refused sign-ins: the user id the refused token claimed, unverified "
        "('(unreadable)' when it held none; null when no token was sent)."
    )
    refused_sign_ins: int | None = strawberry.field(
        description="Refused sign-ins: how many this entry stands for (floods are counted)."
    )
    review: BreakGlassReview | None = strawberry.field(
        resolver=_review,
        description="For a BREAK_GLASS access: its compliance review, null until reviewed.",
    )

    @classmethod
    def from_found(cls, found: Found) -> AuditEntry:
        r = found.record
        resource = (
            r.resource_type if r.resource_id is None else f"{r.resource_type}/{r.resource_id}"
        )
        return cls(
            seq=strawberry.ID(found.label),
            chain=found.entry.chain,
            at=r.at,
            actor_id=strawberry.ID(r.actor_id),
            actor_name=r.actor_name,
            patient_id=optional_id(r.patient_id),
            action=r.action.value,
            resource=resource,
            purpose=r.purpose,
            # A refused sign-in is a refusal; its action says which kind.
            outcome=r.outcome if isinstance(r.outcome, AccessOutcome) else AccessOutcome.DENY,
            reason=r.reason or None,
            sensitivity=list(r.sensitivity),
            client_address=r.client_addr,
            claimed_subject=r.claimed_subject,
            refused_sign_ins=r.refusals,
        )


@strawberry.type
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


@strawberry.type
class AuditVerification:
    ok: bool
    entries_checked: int
    chains: int
    first_bad_seq: strawberry.ID | None = strawberry.field(
        description="The first entry (or checkpoint) found changed, missing or out of order."
    )
    problem: str | None


@strawberry.input
class AuditFilter:
    patient_id: strawberry.ID | None = None
    actor_id: strawberry.ID | None = None
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None
    outcome: AccessOutcome | None = None
    sensitivity: Sensitivity | None = None
    security_events: bool | None = strawberry.field(
        default=None,
        description="true: only security events (refused sign-ins); false: none of them.",
    )


def _window(since: datetime | None, until: datetime | None) -> None:
    for value, name in ((since, "from"), (until, "to")):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"'{name}' needs a time zone offset, e.g. 2026-01-31T09:00:00Z.")
    if since is not None and until is not None and since > until:
        raise InvalidInput("'from' must not be after 'to'.")


async def audit_trail(
    info: Info, filter: AuditFilter, first: int | None = 100, after: str | None = None
) -> AuditPage:
    ctx = info.context
    compliance_officer(ctx, patient_id=filter.patient_id, what="trail")
    size = 100 if first is None else first
    if not 1 <= size <= MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}.")
    _window(filter.from_, filter.to)
    wanted = TrailFilter(
        patient_id=filter.patient_id,
        actor_id=filter.actor_id,
        since=filter.from_,
        until=filter.to,
        outcome=filter.outcome,
        sensitivity=filter.sensitivity,
        security_events=filter.security_events,
    )
    found, cursor = await ctx.audit_reader().trail(wanted, first=size, after=after)
    return AuditPage(entries=[AuditEntry.from_found(f) for f in found], next_cursor=cursor)


Since = Annotated[datetime | None, strawberry.argument(name="from")]


async def access_report(
    info: Info, patient_id: strawberry.ID, from_: Since = None, to: datetime | None = None
) -> list[AuditEntry]:
    return await _report(info, patient_id, from_, to, disclosures=False)


async def disclosure_report(
    info: Info, patient_id: strawberry.ID, from_: Since = None, to: datetime | None = None
) -> list[AuditEntry]:
    return await _report(info, patient_id, from_, to, disclosures=True)


async def _report(
    info: Info,
    patient_id: str,
    since: datetime | None,
    until: datetime | None,
    *,
    disclosures: bool,
) -> list[AuditEntry]:
    ctx = info.context
    what = "disclosure report" if disclosures else "access report"
    compliance_officer(ctx, patient_id=patient_id, what=what)
    _window(since, until)
    reader = ctx.audit_reader()
    if disclosures:
        found = await reader.disclosure_report(patient_id, since, until, now=ctx.now())
    else:
        found = await reader.access_report(patient_id, since, until)
    return [AuditEntry.from_found(f) for f in found]


async def verify_audit_log(info: Info) -> AuditVerification:
    ctx = info.context
    compliance_officer(ctx, patient_id=None, what="verification")
    result = await ctx.audit_reader().verify()
    first = result.first
    return AuditVerification(
        ok=result.ok,
        entries_checked=result.entries_checked,
        chains=result.chains,
        first_bad_seq=strawberry.ID(first.label) if first else None,
        problem=first.what if first else None,
    )


async def break_glass_queue(info: Info) -> list[AuditEntry]:
    ctx = info.context
    compliance_officer(ctx, patient_id=None, what="break-glass queue")
    found = await ctx.audit_reader().break_glass_queue(ctx.services.store)
    return [AuditEntry.from_found(f) for f in found]


async def mark_break_glass_reviewed(info: Info, seq: strawberry.ID, disposition: str) -> AuditEntry:
    ctx = info.context
    actor = compliance_officer(ctx, patient_id=None, what="break-glass review")
    command = build(MarkReviewed, seq=seq, disposition=disposition, reviewer_id=actor.user_id)
    found = await ctx.audit_reader().entry(*parse_seq(command.seq))
    if found is None or found.record.outcome is not AccessOutcome.BREAK_GLASS:
        raise InvalidInput(f"Audit entry {command.seq} is not a break-glass access.")
    patient_id = found.record.patient_id
    own = policy.break_glass_review(actor=actor, accessor_id=found.record.actor_id)
    if not own.permitted:
        refused = records.Touch(
            action=AccessAction.UPDATE,
            resource_type="BreakGlassReview",
            resource_id=found.label,
            outcome=AccessOutcome.DENY,
            reason=own.reason,
            standalone=True,
        )
        note(ctx, refused, {patient_id: frozenset()} if patient_id else NOTHING)
        raise NotPermitted(
            "You took this break-glass access yourself; another compliance officer must "
            "review it (nobody reviews their own emergency access)."
        )
    enrolled = await ctx.repository.load(PATIENT, patient_id) if patient_id else None
    if enrolled is None or enrolled.state is None:
        raise StateConflict(f"Audit entry {command.seq} names no patient to file its review under.")
    label = found.label  # canonical: '02:7' and '2:7' are one entry
    await ctx.handler.execute(
        REVIEW,
        label,
        command.model_copy(update={"seq": label}),
        caller=ctx.caller(),
        scope=Scope(enrolled.state.team_id, patient_id),
        known=NEW,
    )
    touch = records.Touch(
        action=AccessAction.UPDATE,
        resource_type="BreakGlassReview",
        resource_id=label,
        outcome=AccessOutcome.PERMIT,
        reason=f"{actor.user_id} reviewed break-glass access {label}: {command.disposition}",
        standalone=True,
    )
    note(ctx, touch, {enrolled.state.id: frozenset()})
    return AuditEntry.from_found(found)


@strawberry.type
class AuditMutation:
    mark_break_glass_reviewed: AuditEntry = strawberry.mutation(
        resolver=mark_break_glass_reviewed,
        description="Compliance officers: record the disposition of a break-glass access; "
        "it leaves breakGlassQueue.",
    )


@strawberry.type
class AuditQuery:
    audit_trail: AuditPage = strawberry.field(
        resolver=audit_trail,
        description="Compliance officers: the audit log, filtered, oldest first, in pages.",
    )
    access_report: list[AuditEntry] = strawberry.field(
        resolver=access_report,
        description="Compliance officers: every access to the patient's records.",
    )
    disclosure_report: list[AuditEntry] = strawberry.field(
        resolver=disclosure_report,
        description="Compliance officers: the accounting of disclosures (45 CFR 164.528): "
        "released accesses for purposes other than treatment, payment and operations, six "
        "years back unless `from` says otherwise.",
    )
    break_glass_queue: list[AuditEntry] = strawberry.field(
        resolver=break_glass_queue,
        description="Compliance officers: break-glass accesses not yet reviewed, oldest first.",
    )
    verify_audit_log: AuditVerification = strawberry.field(
        resolver=verify_audit_log,
        description="Compliance officers: check every entry, link and checkpoint of the log.",
    )
