"""The one gate every resolver passes before it reads or changes a team's data.

It resolves the caller, finds their place on the team that owns the record, asks the
pure policy, and raises FORBIDDEN when refused. A record that does not exist is refused
in the same words as one the caller may not see, so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.api.context import Context
from services.api.errors import Forbidden
from services.common import policy
from services.common.auth import Actor
from services.plans.domain.team import TEAM, Team


@dataclass(frozen=True)
class Access:
    actor: Actor
    team: Team
    decision: policy.Decision


async def authorize(
    ctx: Context, *, team_id: str | None, action: policy.Action, resource: str
) -> Access:
    """Access to the team `team_id` owns, or FORBIDDEN; UNAUTHENTICATED without a caller.

    `resource` names the record in the refusal ("care plan"); team_id None means the
    record was not found.
    """
    actor = ctx.require_actor()
    team = await _team(ctx, team_id) if team_id else None
    membership = None
    if team is not None and (member := team.member(actor.user_id)) is not None:
        membership = policy.Membership(disciplines=member.disciplines, lead=member.lead)
    decision = policy.decide(actor=actor, membership=membership, action=action)
    if team is None or not decision.permitted:
        if membership is not None and action is policy.Action.MANAGE_ROSTER:
            raise Forbidden("Only a lead of this team can change its roster.")
        raise Forbidden(
            f"You do not have access to this {resource}, or it does not exist. "
            "Team data is open to the team's members only."
        )
    return Access(actor=actor, team=team, decision=decision)


async def _team(ctx: Context, team_id: str) -> Team | None:
    # Once per request: a query touching many plans of one team reads the roster once.
    if team_id not in ctx.teams:
        ctx.teams[team_id] = (await ctx.repository.load(TEAM, team_id)).state
    return ctx.teams[team_id]
