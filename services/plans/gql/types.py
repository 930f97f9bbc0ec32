"""GraphQL types of teams, patients, care plans, huddles and consents, built from state."""

from __future__ import annotations

from datetime import date, datetime
from typing import TypeVar

import strawberry

from schemas.common import Discipline as DisciplineValue
from services.api.access import RESTRICTED, View, withheld
from services.api.context import Context
from services.api.types import (
    Discipline,
    GoalStatus,
    InterventionKind,
    Member,
    PlanStatus,
    Purpose,
    Sensitivity,
    Tier,
    optional_id,
)
from services.common.domain import touched
from services.plans.domain import careplan, consent, huddle, patient, team
from services.plans.handlers import Loaded
from services.tasks.domain import TASK
from services.tasks.gql.types import Task, cards

Info = strawberry.Info[Context, None]
S = TypeVar("S")
_DISCIPLINE_ORDER = {d: i for i, d in enumerate(DisciplineValue)}


def member_from_state(member: team.Member) -> Member:
    return Member(
        user_id=strawberry.ID(member.user_id),
        name=member.name,
        disciplines=sorted(member.disciplines, key=_DISCIPLINE_ORDER.__getitem__),
        lead=member.lead,
    )


@strawberry.type(description="A care team: its roster of members, disciplines and leads.")
class Team:
    id: strawberry.ID
    name: str
    members: list[Member]
    version: int

    @classmethod
    def from_state(cls, loaded: Loaded[team.Team]) -> Team:
        state = _present(loaded)
        return cls(
            id=strawberry.ID(state.id),
            name=state.name,
            members=[member_from_state(m) for m in state.members.values()],
            version=loaded.version,
        )


@strawberry.type(description="A patient enrolled on a care team.")
class Patient:
    id: strawberry.ID
    team_id: strawberry.ID
    mrn: str
    name: str
    birth_date: date

    @classmethod
    def from_state(cls, loaded: Loaded[patient.Patient]) -> Patient:
        state = _present(loaded)
        return cls(
            id=strawberry.ID(state.id),
            team_id=strawberry.ID(state.team_id),
            mrn=state.mrn,
            name=state.name,
            birth_date=state.birth_date,
        )


@strawberry.type(description="A SMART goal of a care plan.")
class Goal:
    id: strawberry.ID
    description: str
    target: str | None
    due_date: date | None
    status: GoalStatus

    @classmethod
    def from_state(cls, goal: careplan.Goal) -> Goal:
        return cls(
            id=strawberry.ID(goal.id),
            description=goal.description,
            target=goal.target,
            due_date=goal.due_date,
            status=goal.status,
        )


@strawberry.type(description="A tiered intervention of a care plan.")
class Intervention:
    id: strawberry.ID
    kind: InterventionKind
    tier: Tier
    title: str
    detail: str | None
    responsible_discipline: Discipline
    sensitivity: list[Sensitivity]
    active: bool
    redacted: bool = strawberry.field(
        description="True when title and detail are withheld by the consent policy."
    )
    due_date: date | None
    discontinued_reason: str | None

    @classmethod
    def seen(cls, item: careplan.Intervention, patient_id: str, view: View) -> Intervention | None:
        """The intervention as the viewer may see it; None when the policy refuses it."""
        decision = view.item(patient_id, item.sensitivity)
        if not decision.permitted:
            return None
        hide = decision.redacted
        return cls(
            id=strawberry.ID(item.id),
            kind=item.kind,
            tier=item.tier,
            title=RESTRICTED if hide else item.title,
            detail=withheld(item.detail, hide),
            responsible_discipline=item.responsible_discipline,
            sensitivity=list(item.sensitivity),
            active=item.active,
            redacted=hide,
            due_date=item.due_date,
            discontinued_reason=withheld(item.discontinued_reason, hide),
        )


@strawberry.type(description="A patient's personalized care plan.")
class CarePlan:
    id: strawberry.ID
    patient_id: strawberry.ID
    team_id: strawberry.ID
    title: str
    status: PlanStatus
    goals: list[Goal]
    interventions: list[Intervention]
    next_review_date: date | None
    last_review_summary: str | None
    version: int = strawberry.field(
        description="Send it back as expectedVersion to refuse edits made since you read it."
    )

    @classmethod
    def from_state(cls, loaded: Loaded[careplan.CarePlan], view: View) -> CarePlan:
        """The plan as the viewer may see it: each intervention decided on its own."""
        state = _present(loaded)
        seen = (Intervention.seen(i, state.patient_id, view) for i in state.interventions)
        return cls(
            id=strawberry.ID(state.id),
            patient_id=strawberry.ID(state.patient_id),
            team_id=strawberry.ID(state.team_id),
            title=state.title,
            status=state.status,
            goals=[Goal.from_state(g) for g in state.goals],
            interventions=[i for i in seen if i is not None],
            next_review_date=state.next_review_date,
            last_review_summary=state.last_review_summary,
            version=loaded.version,
        )


@strawberry.type(description="A note taken in a huddle, possibly about one patient.")
class HuddleNote:
    id: strawberry.ID
    author_id: strawberry.ID
    patient_id: strawberry.ID | None
    text: str
    sensitivity: list[Sensitivity]
    redacted: bool
    at: datetime

    @classmethod
    def seen(cls, note: huddle.Note, view: View) -> HuddleNote | None:
        """The note as the viewer may see it; None when the policy refuses it."""
        decision = view.item(note.patient_id, note.sensitivity)
        if not decision.permitted:
            return None
        return cls(
            id=strawberry.ID(note.id),
            author_id=strawberry.ID(note.author_id),
            patient_id=optional_id(note.patient_id),
            text=RESTRICTED if decision.redacted else note.text,
            sensitivity=list(note.sensitivity),
            redacted=decision.redacted,
            at=note.at,
        )


async def resolve_action_items(ctx: Context, root: Huddle) -> list[Task]:
    """The huddle's action items as its viewer may see them (read once)."""
    if root.items is None:
        loaded = await ctx.repository.load_many(TASK, root.action_item_ids)
        tasks = [t.state for t in loaded if t.state is not None]
        await root.view.include(ctx, touched(p for t in tasks for p in t.patients().items()))
        root.items = cards(tasks, root.view, now=ctx.now())
    return root.items


async def _action_items(root: Huddle, info: Info) -> list[Task]:
    return await resolve_action_items(info.context, root)


@strawberry.type(description="A team meeting: SCHEDULED, then OPEN, then CLOSED.")
class Huddle:
    id: strawberry.ID
    team_id: strawberry.ID
    scheduled_for: datetime
    status: str
    notes: list[HuddleNote]
    version: int
    action_item_ids: strawberry.Private[tuple[str, ...]]
    # Whose eyes the huddle is shown to: its action items are decided for them too.
    view: strawberry.Private[View]
    items: strawberry.Private[list[Task] | None]
    action_items: list[Task] = strawberry.field(
        resolver=_action_items, description="The tasks the huddle's action items put on the board."
    )

    @classmethod
    def from_state(cls, loaded: Loaded[huddle.Huddle], view: View) -> Huddle:
        """The huddle as the viewer may see it: each note decided on its own."""
        state = _present(loaded)
        seen = (HuddleNote.seen(n, view) for n in state.notes)
        return cls(
            id=strawberry.ID(state.id),
            team_id=strawberry.ID(state.team_id),
            scheduled_for=state.scheduled_for,
            status=state.status.value,
            notes=[n for n in seen if n is not None],
            version=loaded.version,
            action_item_ids=tuple(a.task_id for a in state.action_items),
            view=view,
            items=None,
        )


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
        state = _present(loaded)
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


def _present(loaded: Loaded[S]) -> S:
    if loaded.state is None:
        raise LookupError("a GraphQL type was built from an aggregate that does not exist")
    return loaded.state
