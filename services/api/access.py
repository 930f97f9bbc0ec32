"""The one gate every resolver passes before it reads or changes a team's data, and the
access records of what it lets through (or refuses).

It resolves the caller, finds their place on the team that owns the record, asks the
pure policy, and raises FORBIDDEN when refused. A record that does not exist is refused
in the same words as one the caller may not see, so ids cannot be probed. Every refusal,
and every release of patient data, becomes an access record of the operation; the
operation's records go to the audit log before its response leaves (services.api.schema).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline
from services.api.context import Context
from services.api.errors import Forbidden, ServiceUnavailable
from services.audit import records
from services.audit.sink import AuditUnavailable
from services.common import policy
from services.common.auth import Actor
from services.common.domain import NOTHING, Touched
from services.plans.domain.team import TEAM, Team

# The records of the GraphQL operation running in this task (set per operation).
_operation: ContextVar[records.AccessLog | None] = ContextVar("access_log", default=None)

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
    actor: Actor
    team: Team
    decision: policy.Decision

    @property
    def disciplines(self) -> frozenset[Discipline]:
        member = self.team.member(self.actor.user_id)
        return member.disciplines if member is not None else frozenset()


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
) -> Access:
    """Access to the team `team_id` owns, or FORBIDDEN; UNAUTHENTICATED without a caller.

    `resource` names the record in the refusal ("care plan"); team_id None means the
    record was not found. A refusal is recorded against `patients` (the patients whose
    data the caller tried to reach), or against the resource when there are none.
    """
    actor = ctx.require_actor()
    team = await _team(ctx, team_id) if team_id else None
    membership = None
    if team is not None and (member := team.member(actor.user_id)) is not None:
        membership = policy.Membership(disciplines=member.disciplines, lead=member.lead)
    decision = policy.decide(actor=actor, membership=membership, action=action)
    if team is None or not decision.permitted:
        reason = decision.reason if team is not None else "no such record, or no team to check"
        touch = records.Touch(
            action=_ATTEMPTED[action],
            resource_type=resource_type(resource),
            # A team-wide resource (board, roster, agenda) is named by the team's id.
            resource_id=resource_id if resource_id is not None else team_id,
            outcome=AccessOutcome.DENY,
            reason=reason,
            disciplines=membership.disciplines if membership else frozenset(),
        )
        note(ctx, touch, patients)
        if membership is not None and action is policy.Action.MANAGE_ROSTER:
            raise Forbidden("Only a lead of this team can change its roster.")
        raise Forbidden(
            f"You do not have access to this {resource}, or it does not exist. "
            "Team data is open to the team's members only."
        )
    return Access(actor=actor, team=team, decision=decision)


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
        raise Forbidden("Only compliance officers may read the audit log.")
    return actor


def released(
    ctx: Context,
    access: Access,
    action: AccessAction,
    kind: str,
    resource_id: str | None,
    patients: Touched,
) -> None:
    """Record that the response carries these patients' data, as the gate decided."""
    note(ctx, _touch(access, action, kind, resource_id), patients)


async def pushed(
    ctx: Context, access: Access, kind: str, resource_id: str | None, patients: Touched
) -> None:
    """Record a subscription push before it is sent; SERVICE_UNAVAILABLE ends the
    subscription (nothing is sent) when the audit log cannot take the records."""
    touch = _touch(access, AccessAction.SUBSCRIBE_PUSH, kind, resource_id)
    await _publish(ctx, records.records_for(ctx.requester(), touch, patients, at=ctx.now()))


async def flush(ctx: Context) -> None:
    """Send the operation's records so far; SERVICE_UNAVAILABLE if they cannot go."""
    log = _operation.get()
    await _publish(ctx, log.drain() if log is not None else [])


async def _publish(ctx: Context, batch: list[AccessRecorded]) -> None:
    try:
        await ctx.audit.publish(batch)
    except AuditUnavailable:
        raise ServiceUnavailable(UNRECORDED) from None


def note(ctx: Context, touch: records.Touch, patients: Touched) -> None:
    log = _operation.get()
    if log is None:
        raise RuntimeError("patient data reached outside a GraphQL operation")
    log.add(records.records_for(ctx.requester(), touch, patients, at=ctx.now()))


def begin_operation() -> records.AccessLog:
    """A fresh record log for the operation about to run in this task."""
    log = records.AccessLog()
    _operation.set(log)
    return log


def _touch(
    access: Access, action: AccessAction, kind: str, resource_id: str | None
) -> records.Touch:
    return records.Touch(
        action=action,
        resource_type=kind,
        resource_id=resource_id,
        outcome=access.decision.outcome,
        reason=access.decision.reason,
        disciplines=access.disciplines,
    )


async def _team(ctx: Context, team_id: str) -> Team | None:
    # Once per request: a query touching many plans of one team reads the roster once.
    if team_id not in ctx.teams:
        ctx.teams[team_id] = (await ctx.repository.load(TEAM, team_id)).state
    return ctx.teams[team_id]
