"""The access policy: one pure function deciding whether a caller may act on a team's data.

Every resolver reaches it through `services.api.access.authorize`. Today it knows team
membership and leads; consent, purpose of use and break-glass join it later, here, so
that the rule stays in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.common import AccessOutcome, Discipline
from services.common.auth import Actor


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    MANAGE_ROSTER = "manage_roster"


@dataclass(frozen=True)
class Membership:
    """The caller's place on the team that owns the data."""

    disciplines: frozenset[Discipline]
    lead: bool


@dataclass(frozen=True)
class Decision:
    outcome: AccessOutcome
    # For compliance officers reading the audit log: why, in plain words.
    reason: str

    @property
    def permitted(self) -> bool:
        return self.outcome is not AccessOutcome.DENY


def decide(*, actor: Actor, membership: Membership | None, action: Action) -> Decision:
    """PERMIT or DENY, with the reason. Global roles give no access to a team's patients."""
    if membership is None:
        return Decision(AccessOutcome.DENY, f"{actor.user_id} is not a member of the team")
    if action is Action.MANAGE_ROSTER and not membership.lead:
        return Decision(
            AccessOutcome.DENY, f"{actor.user_id} is a member but not a lead of the team"
        )
    roles = ", ".join(sorted(d.value for d in membership.disciplines)) or "no discipline"
    lead = "lead, " if membership.lead else ""
    return Decision(AccessOutcome.PERMIT, f"{actor.user_id} is a team member ({lead}{roles})")
