"""Loading a record for a resolver through the access gate, and the checks that the
patient or assignee a command names belongs to the record's team."""

from __future__ import annotations

from typing import Protocol, TypeVar

from services.api.access import Access, authorize
from services.api.context import Context
from services.common.domain import AggregateType, InvalidInput, Missing
from services.common.policy import Action
from services.plans.domain.patient import PATIENT
from services.plans.handlers import Loaded


class TeamOwned(Protocol):
    @property
    def team_id(self) -> str: ...


T = TypeVar("T", bound=TeamOwned)


async def load(
    ctx: Context, kind: AggregateType[T], aggregate_id: str, action: Action
) -> tuple[Loaded[T], Access]:
    """The record and the caller's access to it; FORBIDDEN if it is missing or not theirs."""
    ctx.require_actor()  # no token: UNAUTHENTICATED before anything is read
    loaded = await ctx.repository.load(kind, aggregate_id)
    team_id = loaded.state.team_id if loaded.state is not None else None
    access = await authorize(ctx, team_id=team_id, action=action, resource=kind.name)
    return loaded, access


async def patient_on_team(ctx: Context, patient_id: str | None, team_id: str, where: str) -> None:
    """NOT_FOUND unless the patient (when one is named) is enrolled on the team."""
    if patient_id is None:
        return
    enrolled = await ctx.repository.load(PATIENT, patient_id)
    if enrolled.state is None or enrolled.state.team_id != team_id:
        raise Missing(f"There is no patient {patient_id} on {where}.")


def assignee_on_team(access: Access, assignee_id: str | None) -> None:
    """BAD_USER_INPUT unless the assignee (when one is named) is a member of the team."""
    if assignee_id is not None and access.team.member(assignee_id) is None:
        raise InvalidInput(f"assigneeId {assignee_id} is not a member of this team.")
