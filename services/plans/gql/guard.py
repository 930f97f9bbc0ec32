"""Loading a record for a resolver, through the access gate, in one step."""

from __future__ import annotations

from typing import Protocol, TypeVar

from services.api.access import Access, authorize
from services.api.context import Context
from services.common.domain import AggregateType
from services.common.policy import Action
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
