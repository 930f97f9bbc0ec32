"""The one gate every resolver passes before it reads or changes a team's data, what each
response may show of every item in it, and the access records of both.

`authorize` resolves the caller, finds their place on the team that owns the record,
asks the pure policy (services.common.policy) about the record itself, and raises
FORBIDDEN when refused. A record that does not exist is refused in the same words as one
the caller may not see, so ids cannot be probed. A `View` then decides each item the
response carries (in full, redacted, or left out) against the patient's consents as they
stand now, and its decisions become the operation's access records, which go to the
audit log before the response leaves (services.api.graphql.schema).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from schemas.consent import ConsentGranted
from schemas.patient import PatientEnrolled
from services.api.graphql import read_rate
from services.api.graphql.context import Context
from services.audit import records
from services.audit.sink import AuditSink, AuditUnavailable
from services.common import policy
from services.common.actor import Actor
from services.common.domain import NOTHING, Touched
from services.common.errors import InvalidInput, NotPermitted, Unavailable
from services.plans.domain.consent import CONSENT, Consent
from services.plans.domain.team import TEAM, Team

# What a redacted item shows in place of its title, detail or text.
RESTRICTED = "[restricted]"


def withheld(text: str | None, redacted: bool) -> str | None:
    """Free text of a redacted item: "[restricted]" where there was some."""
    return RESTRICTED if redacted and text is not None else text


_ATTEMPTED = {
    policy.Action.READ: AccessAction.READ,
    policy.Action.WRITE: AccessAction.UPDATE,
    policy.Action.MANAGE_ROSTER: AccessAction.UPDATE,
}

UNRECORDED = (
    "The access could not be recorded in the audit log, so no patient data is returned. "
    "Try again shortly; a change you sent may already have been saved, so reload first."
)


@dataclass(frozen=True)
class Access:
    """The caller's standing on a team's record: who, on what terms, and the policy's
    answer for the record's own (untagged) content."""

    actor: Actor
    team: Team
    membership: policy.Membership | None
    purpose: Purpose
    break_glass: str | None
    decision: policy.Decision

    @property
    def disciplines(self) -> frozenset[Discipline]:
        return self.membership.disciplines if self.membership is not None else frozenset()

    def decide(
        self,
        patient_id: str | None,
        sensitivity: frozenset[Sensitivity],
        consents: Sequence[Consent],
        now: datetime,
        action: policy.Action = policy.Action.READ,
    ) -> policy.Decision:
        """The policy's decision on one item about `patient_id`, for this caller."""
        return policy.decide(
            actor=self.actor,
            membership=self.membership,
            patient_id=patient_id,
            sensitivity=sensitivity,
            purpose=self.purpose,
            consents=consents,
            break_glass=self.break_glass,
            now=now,
            action=action,
        )


@dataclass
class _Tally:
    reasons: dict[str, None] = field(default_factory=dict)  # in order, without repeats
    sensitivity: set[Sensitivity] = field(default_factory=set)


class View:
    """What one response (or one subscription push) shows of each item it carries, decided
    per item; the decisions are the response's access records."""

    def __init__(
        self,
        access: Access,
        action: AccessAction,
        kind: str,
        resource_id: str | None,
        now: datetime,
    ) -> None:
        self.access = access
        self._action = action
        self._kind = kind
        self._resource_id = resource_id
        self._now = now
        self._consents: dict[str, list[Consent]] = {}
        self._tally: dict[tuple[str | None, AccessOutcome], _Tally] = {}

    def item(self, patient_id: str | None, sensitivity: Iterable[Sensitivity]) -> policy.Decision:
        """The decision on one item about `patient_id`, remembered for the records."""
        tags = frozenset(sensitivity)
        consents = self._consents.get(patient_id or "", [])
        decision = self.access.decide(patient_id, tags, consents, self._now)
        self.count(patient_id, decision, tags)
        return decision

    def count(
        self, patient_id: str | None, decision: policy.Decision, tags: frozenset[Sensitivity]
    ) -> None:
        tally = self._tally.setdefault((patient_id, decision.outcome), _Tally())
        tally.reasons[decision.reason] = None
        tally.sensitivity |= tags

    async def include(self, ctx: Context, patients: Touched) -> None:
        """Read the consents the items about these patients may turn on, if not yet read."""
        wanted = [
            p
            for p, tags in patients.items()
            if p not in self._consents
            and self.access.membership is not None
            and policy.needs_consents(self.access.purpose, tags)
        ]
        self._consents.update(await consents_of(ctx, wanted))

    def records(self, requester: records.Requester, *, at: datetime) -> list[AccessRecorded]:
        made: list[AccessRecorded] = []
        for (patient_id, outcome), tally in self._tally.items():
            touch = records.Touch(
                action=self._action,
                resource_type=self._kind,
                resource_id=self._resource_id,
                outcome=outcome,
                reason="; ".join(tally.reasons),
                disciplines=self.access.disciplines,
            )
            reached = {patient_id: frozenset(tally.sensitivity)} if patient_id else NOTHING
            made += records.records_for(requester, touch, reached, at=at)
        return made


@dataclass
class _Operation:
    """The access records of the GraphQL operation running in this task."""

    log: records.AccessLog = field(default_factory=records.AccessLog)
    views: list[View] = field(default_factory=list)


_operation: ContextVar[_Operation | None] = ContextVar("access_log", default=None)


def resource_type(resource: str) -> str:
    """'care plan' -> 'CarePlan': the record's type as access records name it."""
    return resource.title().replace(" ", "")


async def authorize(
    ctx: Context,
    *,
    team_id: str | None,
    action: policy.Action,
    resource: str,
    resource_id: str | None = None,
    patients: Touched = NOTHING,
    patient_id: str | None = None,
    sensitivity: Iterable[Sensitivity] = (),
) -> Access:
    """Access to the team `team_id` owns, or FORBIDDEN; UNAUTHENTICATED without a caller.

    `resource` names the record in the refusal ("care plan"); team_id None means the
    record was not found. `patient_id` names the one patient the record is about (a
    patient, a care plan, a consent): only such a record may be opened by break-glass,
    and the patient's consents decide a purpose other than care. `sensitivity` is the
    record's own tags, where the record is a single item (a task). A refusal is recorded
    against `patients` (the patients whose data the caller tried to reach), or against
    the resource when there are none.
    """
    actor = ctx.require_actor()
    purpose = ctx.purpose_of_use()
    if action is policy.Action.READ:
        _within_read_rate(ctx, actor, resource_type(resource), resource_id or team_id, patients)
    team = await _team(ctx, team_id) if team_id else None
    membership = None
    if team is not None and (member := team.member(actor.user_id)) is not None:
        membership = policy.Membership(disciplines=member.disciplines, lead=member.lead)
    decision = _NO_RECORD
    access = None
    if team is not None:
        access = Access(actor, team, membership, purpose, ctx.break_glass, _NO_RECORD)
        tags = frozenset(sensitivity)
        consents: list[Consent] = []
        if membership and patient_id and policy.needs_consents(purpose, tags):
            consents = (await consents_of(ctx, [patient_id]))[patient_id]
        decision = access.decide(patient_id, tags, consents, ctx.now(), action)
    if access is None or not decision.permitted:
        touch = records.Touch(
            action=_ATTEMPTED[action],
            resource_type=resource_type(resource),
            # A team-wide resource (board, roster, agenda) is named by the team's id.
            resource_id=resource_id if resource_id is not None else team_id,
            outcome=AccessOutcome.DENY,
            reason=decision.reason,
            disciplines=membership.disciplines if membership else frozenset(),
        )
        note(ctx, touch, patients)
        if membership is not None and action is policy.Action.MANAGE_ROSTER:
            raise NotPermitted("Only a lead of this team can change its roster.")
        if decision.unseen:
            raise NotPermitted(unseen(resource))
        if membership is not None:
            raise NotPermitted(
                f"Your purpose of use ({purpose.value}) does not give access to this "
                f"{resource}: {_PURPOSE_RULE}"
            )
        if ctx.break_glass and policy.GLOBAL_ROLES & actor.roles:
            raise NotPermitted(
                "Compliance officers and administrators cannot break the glass: those who "
                "review emergency access do not take it. Emergency access is for clinicians."
            )
        raise NotPermitted(
            f"You do not have access to this {resource}, or it does not exist. "
            "Team data is open to the team's members only (or, in an emergency, one "
            "patient's records for TREATMENT with an X-Break-Glass reason)."
        )
    return replace(access, decision=decision)


def unseen(resource: str) -> str:
    """The refusal of a change to an item the caller may only see redacted: it names
    none of the item's tags, which the caller may not know."""
    return (
        f"This {resource} is one you may only see redacted ({RESTRICTED}), so you cannot "
        "change it. A teammate whom the patient's consent covers can."
    )


async def may_change(
    ctx: Context,
    access: Access,
    *,
    resource: str,
    patient_id: str,
    items: Iterable[tuple[str, Iterable[Sensitivity]]],
    refusal: str | None = None,
) -> None:
    """FORBIDDEN, recorded as DENY, unless the caller may change every one of `items` (id,
    tags) of the record `access` let them change: nobody changes an item they may only
    see redacted. `refusal` replaces the words of `unseen(resource)`."""
    tagged = [(item_id, frozenset(tags)) for item_id, tags in items if tags]
    if not tagged:  # untagged items are decided as the record itself was
        return
    consents = (await consents_of(ctx, [patient_id]))[patient_id]
    for item_id, tags in tagged:
        decision = access.decide(patient_id, tags, consents, ctx.now(), policy.Action.WRITE)
        if decision.permitted:
            continue
        touch = records.Touch(
            action=AccessAction.UPDATE,
            resource_type=resource_type(resource),
            resource_id=item_id,
            outcome=AccessOutcome.DENY,
            reason=decision.reason,
            disciplines=access.disciplines,
        )
        note(ctx, touch, {patient_id: tags})
        if decision.unseen:
            raise NotPermitted(refusal or unseen(resource))
        raise NotPermitted(
            f"Your purpose of use ({access.purpose.value}) does not give access to this "
            f"{resource}: {_PURPOSE_RULE}"
        )


async def consent_entry(
    ctx: Context,
    access: Access,
    *,
    patient_id: str,
    consent_id: str | None,
    disciplines: Iterable[Discipline],
    revoking: bool = False,
) -> None:
    """FORBIDDEN, recorded as DENY, unless the caller may document (or, `revoking`,
    withdraw) this consent of the patient: a lead or a member of a discipline the
    settings entitle, and never a consent naming a discipline they hold."""
    named = frozenset(disciplines)
    decision = policy.consent_entry(
        actor=access.actor,
        membership=access.membership,
        disciplines=named,
        recorders=ctx.settings.consent_recorder_disciplines,
        revoking=revoking,
    )
    if decision.permitted:
        return
    touch = records.Touch(
        action=AccessAction.UPDATE if revoking else AccessAction.CREATE,
        resource_type="Consent",
        resource_id=consent_id,
        outcome=AccessOutcome.DENY,
        reason=decision.reason,
        disciplines=access.disciplines,
    )
    note(ctx, touch, {patient_id: frozenset()})
    entitled = access.membership is not None and (
        access.membership.lead
        or not access.disciplines.isdisjoint(ctx.settings.consent_recorder_disciplines)
    )
    if entitled:
        raise NotPermitted(
            "This consent names a discipline you hold on the team, so documenting it would "
            "widen your own access to the patient's records: another entitled member of the "
            "team must document it."
        )
    raise NotPermitted(
        "Only a lead of this team, or a member of a discipline this deployment entitles, "
        "may document or revoke a patient's consent."
    )


async def role_assignment(ctx: Context, access: Access, *, team_id: str, user_id: str) -> None:
    """FORBIDDEN, recorded as DENY, when the caller (a lead) gives themselves a discipline
    on a team with a patient enrolled: that widens their own access, so another lead must.
    The event store is asked only when the caller names themselves."""
    enrolled = user_id == access.actor.user_id and await ctx.repository.team_has(
        team_id, PatientEnrolled
    )
    decision = policy.role_assignment(
        actor=access.actor, user_id=user_id, patients_enrolled=enrolled
    )
    if decision.permitted:
        return
    touch = records.Touch(
        action=AccessAction.UPDATE,
        resource_type="Team",
        resource_id=team_id,
        outcome=AccessOutcome.DENY,
        reason=decision.reason,
        disciplines=access.disciplines,
    )
    note(ctx, touch, NOTHING)
    raise NotPermitted(
        "You cannot give yourself a discipline on a team that has patients enrolled: your "
        "disciplines decide which of their records you see, so another lead of the team "
        "must assign it."
    )


_NO_RECORD = policy.Decision(AccessOutcome.DENY, "no such record, or no team to check")


_PURPOSE_RULE = (
    "a team's records are used for TREATMENT, CARE_COORDINATION and OPERATIONS; any "
    "other purpose needs the patient's consent naming it and your discipline."
)


async def consents_of(ctx: Context, patient_ids: Iterable[str | None]) -> dict[str, list[Consent]]:
    """The patients' consents as they stand now (every patient asked for is a key)."""
    wanted = [p for p in dict.fromkeys(patient_ids) if p is not None]
    found: dict[str, list[Consent]] = {p: [] for p in wanted}
    if wanted:
        for loaded in await ctx.repository.load_for_patients(CONSENT, wanted, ConsentGranted):
            if loaded.state is not None and loaded.state.patient_id in found:
                found[loaded.state.patient_id].append(loaded.state)
    return found


async def view(
    ctx: Context,
    access: Access,
    action: AccessAction,
    kind: str,
    resource_id: str | None,
    patients: Touched,
    *,
    live: bool = False,
) -> View:
    """A view for a response carrying these patients' data: the record itself under the
    gate's decision, and each item as `View.item` decides it. Unless `live` (a
    subscription push, published by `pushed`), its records join the operation's."""
    shown = View(access, action, kind, resource_id, ctx.now())
    await shown.include(ctx, patients)
    for patient_id in patients:
        # The record's own content (names, titles, goals), as the gate decided it.
        shown.count(patient_id, access.decision, frozenset())
    if not live:
        _current().views.append(shown)
    return shown


def compliance_officer(ctx: Context, *, patient_id: str | None, what: str) -> Actor:
    """The caller, if a compliance officer; FORBIDDEN otherwise. Either way the attempt to
    read the audit log is itself recorded (against the patient it asked about)."""
    actor = ctx.require_actor()
    permitted = actor.is_compliance_officer
    touch = records.Touch(
        action=AccessAction.READ,
        resource_type="AuditLog",
        resource_id=what,
        outcome=AccessOutcome.PERMIT if permitted else AccessOutcome.DENY,
        reason=f"{actor.user_id} is "
        + ("a compliance officer" if permitted else "not a compliance officer"),
        standalone=True,
    )
    note(ctx, touch, {patient_id: frozenset()} if patient_id else NOTHING)
    if not permitted:
        raise NotPermitted("Only compliance officers may read the audit log.")
    return actor


async def pushed(ctx: Context, shown: View) -> None:
    """Record a subscription push before it is sent; SERVICE_UNAVAILABLE ends the
    subscription (nothing is sent) when the audit log cannot take the records. The
    records of pushes made meanwhile (a change's other subscribers) share one hand-off."""
    await _publish(ctx, shown.records(ctx.requester(), at=ctx.now()), ctx.services.pushes)


async def flush(ctx: Context) -> None:
    """Send the operation's records so far; SERVICE_UNAVAILABLE if they cannot go."""
    operation = _operation.get()
    if operation is None:
        return
    if operation.views:  # views exist only where a caller was let through
        requester, at = ctx.requester(), ctx.now()
        for shown in operation.views:
            operation.log.add(shown.records(requester, at=at))
        operation.views.clear()
    await _publish(ctx, operation.log.drain())


async def _publish(
    ctx: Context, batch: list[AccessRecorded], sink: AuditSink | None = None
) -> None:
    try:
        await (sink or ctx.audit).publish(batch)
    except AuditUnavailable:
        raise Unavailable(UNRECORDED) from None


def note(ctx: Context, touch: records.Touch, patients: Touched) -> None:
    _current().log.add(records.records_for(ctx.requester(), touch, patients, at=ctx.now()))


def begin_operation() -> None:
    """A fresh record log for the operation about to run in this task."""
    _operation.set(_Operation())


def _current() -> _Operation:
    operation = _operation.get()
    if operation is None:
        raise RuntimeError("patient data reached outside a GraphQL operation")
    return operation


async def _team(ctx: Context, team_id: str) -> Team | None:
    # Once per request: a query touching many plans of one team reads the roster once.
    if team_id not in ctx.teams:
        ctx.teams[team_id] = (await ctx.repository.load(TEAM, team_id)).state
    return ctx.teams[team_id]


def _within_read_rate(
    ctx: Context, actor: Actor, kind: str, resource_id: str | None, patients: Touched
) -> None:
    """BAD_USER_INPUT past the actor's read rate (services.api.graphql.read_rate); the first
    refusal in a window is recorded as a DENY naming the limit."""
    rate = ctx.services.read_rate
    refusal = rate.take(actor.user_id)
    if refusal is None:
        return
    limit = f"readRate of {rate.per_second:g} reads per second (bursts of {rate.burst})"
    if refusal.record:
        window = read_rate.AUDIT_WINDOW_SECONDS
        reason = f"over the {limit}; further refusals for {window:g} s are not recorded"
        touch = records.Touch(
            action=AccessAction.READ,
            resource_type=kind,
            resource_id=resource_id,
            outcome=AccessOutcome.DENY,
            reason=reason,
        )
        note(ctx, touch, patients)
    raise InvalidInput(
        f"Too many reads of patient data: over the limit {limit} per user. "
        f"Retry after {refusal.retry_after} s.",
        extensions={
            "limit": "readRate",
            "allowed": rate.per_second,
            "burst": rate.burst,
            "retryAfter": refusal.retry_after,
        },
    )
