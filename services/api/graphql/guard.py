"""Loading a record for a resolver through the access gate, the view a response shows it
through (which records what it releases), and the checks that the patient or assignee a
command names belongs to the record's team."""

from __future__ import annotations

from typing import Protocol, TypeVar

from schemas.audit import AccessAction
from services.api.graphql.access import Access, View, authorize, resource_type, view
from services.api.graphql.context import Context
from services.common.aggregates import Loaded
from services.common.domain import NOTHING, AggregateType, Touched
from services.common.errors import InvalidInput, Missing
from services.common.policy import Action
from services.plans.domain.patient import PATIENT
from services.plans.domain.team import TEAM
from services.tasks.domain import Task


class TeamOwned(Protocol):
    @property
    def team_id(self) -> str: ...

    def patients(self) -> Touched: ...


T = TypeVar("T", bound=TeamOwned)


async def load(
    ctx: Context,
    kind: AggregateType[T],
    aggregate_id: str,
    action: Action,
    *,
    one_patient: bool = False,
) -> tuple[Loaded[T], Access]:
    """The record and the caller's access to it; FORBIDDEN if it is missing or not theirs
    (recorded against the patients whose data it holds). `one_patient`: the record is
    one patient's (a patient, a care plan, a consent), which break-glass may open."""
    # No token: UNAUTHENTICATED before anything is read (and a failed sign-in recorded).
    ctx.require_actor(named=(kind, aggregate_id))
    # The record and its team's roster, which the gate reads next, in one round trip when
    # the record is known (a record never changes team); the roster once a request.
    loaded, team = await ctx.repository.load_with(
        kind,
        aggregate_id,
        TEAM,
        lambda state: None if state.team_id in ctx.teams else state.team_id,
    )
    state = loaded.state
    if state is not None and team is not None:
        ctx.teams[state.team_id] = team.state
    patients = state.patients() if state is not None else NOTHING
    access = await authorize(
        ctx,
        team_id=state.team_id if state is not None else None,
        action=action,
        resource=kind.name,
        resource_id=aggregate_id,
        patients=patients,
        patient_id=next(iter(patients), None) if one_patient and len(patients) == 1 else None,
        # A task is one item: its own tags decide it (GINA refuses it outright).
        sensitivity=state.sensitivity if isinstance(state, Task) else (),
    )
    return loaded, access


async def read(
    ctx: Context, kind: AggregateType[T], aggregate_id: str, *, one_patient: bool = False
) -> tuple[Loaded[T], View]:
    """The record, for a query whose answer is the record itself, and the view it is
    shown through."""
    loaded, access = await load(ctx, kind, aggregate_id, Action.READ, one_patient=one_patient)
    assert loaded.state is not None
    kind_name = resource_type(kind.name)
    shown = await view(
        ctx, access, AccessAction.READ, kind_name, aggregate_id, loaded.state.patients()
    )
    return loaded, shown


async def changed(
    ctx: Context,
    access: Access,
    kind: AggregateType[T],
    aggregate_id: str,
    loaded: Loaded[T],
    *,
    created: bool = False,
) -> View:
    """The view a mutation's answer, the record as changed, goes back to the caller in."""
    assert loaded.state is not None
    action = AccessAction.CREATE if created else AccessAction.UPDATE
    kind_name = resource_type(kind.name)
    return await view(ctx, access, action, kind_name, aggregate_id, loaded.state.patients())


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


S = TypeVar("S")


def present(loaded: Loaded[S]) -> S:
    """The state of an aggregate a GraphQL type is built from (it exists by then)."""
    if loaded.state is None:
        raise LookupError("a GraphQL type was built from an aggregate that does not exist")
    return loaded.state
