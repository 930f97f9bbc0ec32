"""Huddles: the Huddle and HuddleNote types, `huddle`, the meeting's changes (schedule, open,
notes, action items, close) and the live `huddleChanged` subscription. Each action item
becomes a task on the team's board (services.tasks.follow_ups)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import date, datetime

import strawberry

from schemas.audit import AccessAction
from services.api.graphql import guard, paging
from services.api.graphql.access import (
    RESTRICTED,
    Access,
    View,
    authorize,
    flush,
    pushed,
    view,
)
from services.api.graphql.board import Task, cards
from services.api.graphql.context import Context, Info
from services.api.graphql.guard import present
from services.api.graphql.live import PUSH, updates
from services.api.graphql.scalars import (
    Discipline,
    HuddleStatus,
    Position,
    Sensitivity,
    optional_id,
)
from services.common import dates, directory
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import Command, build
from services.common.domain import touched
from services.common.policy import Action
from services.plans.domain import huddle
from services.plans.domain.huddle import HUDDLE
from services.tasks.domain import TASK


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
    status: str = strawberry.field(description="SCHEDULED | OPEN | CLOSED, as `state` says.")
    state: HuddleStatus
    notes: list[HuddleNote]
    version: int
    action_item_ids: strawberry.Private[tuple[str, ...]]
    # Whose eyes the huddle is shown to: its action items are decided for them too.
    view: strawberry.Private[View]
    items: strawberry.Private[list[Task] | None]
    action_items: list[Task] = strawberry.field(
        resolver=_action_items, description="The tasks the huddle's action items put on the board."
    )
    position: Position | None = strawberry.field(
        default=None,
        description="On a huddleChanged push, the event-store position of the change it "
        "shows (pass it as atLeast to read the board or agenda as of it); null on a query.",
    )

    @classmethod
    def from_state(cls, loaded: Loaded[huddle.Huddle], view: View) -> Huddle:
        """The huddle as the viewer may see it: each note decided on its own."""
        state = present(loaded)
        seen = (HuddleNote.seen(n, view) for n in state.notes)
        return cls(
            id=strawberry.ID(state.id),
            team_id=strawberry.ID(state.team_id),
            scheduled_for=state.scheduled_for,
            status=state.status.value,
            state=state.status,
            notes=[n for n in seen if n is not None],
            version=loaded.version,
            action_item_ids=tuple(a.task_id for a in state.action_items),
            view=view,
            items=None,
        )


# --- queries -------------------------------------------------------------------------


async def resolve_huddle(info: Info, id: strawberry.ID) -> Huddle | None:
    loaded, shown = await guard.read(info.context, HUDDLE, id)
    return Huddle.from_state(loaded, shown)


@strawberry.type(description="A page of a team's huddles, in the order they were scheduled.")
class HuddlePage:
    items: list[Huddle]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next page; null on the last page."
    )


async def team_huddles(
    ctx: Context,
    access: Access,
    *,
    status: HuddleStatus | None,
    first: int | None,
    after: str | None,
) -> HuddlePage:
    """The team's huddles past the cursor (those in `status` only, when given), each as
    the viewer may see it; one access record per patient their notes are about."""
    size = paging.size(first)
    position = paging.decode("huddles", after)
    async with ctx.database.acquire() as conn:
        found = await directory.team_huddles(
            conn,
            access.team.id,
            after=position,
            limit=size + 1,
            status=None if status is None else status.value,
        )
    page = found[:size]
    loaded = await ctx.repository.load_many(HUDDLE, [f.record_id for f in page])
    meetings = [m for m in loaded if m.state is not None]
    patients = touched(p for m in meetings if m.state for p in m.state.patients().items())
    shown = await view(ctx, access, AccessAction.READ, "Huddle", None, patients)
    more = len(found) > size
    return HuddlePage(
        items=[Huddle.from_state(m, shown) for m in meetings],
        next_cursor=paging.encode("huddles", page[-1].position) if more else None,
    )


# --- mutations -----------------------------------------------------------------------


async def schedule_huddle(info: Info, team_id: strawberry.ID, at: datetime) -> Huddle:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.WRITE, resource="team")
    dates.aware(at, argument="at")
    huddle_id = new_id()
    command = build(huddle.ScheduleHuddle, huddle_id=huddle_id, team_id=team_id, at=at)
    loaded = await ctx.handler.execute(
        HUDDLE, huddle_id, command, caller=ctx.caller(), scope=Scope(team_id), known=NEW
    )
    return Huddle.from_state(loaded, await guard.changed(ctx, access, HUDDLE, huddle_id, loaded))


async def open_huddle(info: Info, huddle_id: strawberry.ID) -> Huddle:
    return await _change_huddle(info.context, huddle_id, huddle.OpenHuddle, None)


async def close_huddle(info: Info, huddle_id: strawberry.ID) -> Huddle:
    return await _change_huddle(info.context, huddle_id, huddle.CloseHuddle, None)


async def record_huddle_note(
    info: Info,
    huddle_id: strawberry.ID,
    text: str,
    patient_id: strawberry.ID | None = None,
    sensitivity: Sequence[Sensitivity] | None = (),
) -> Huddle:
    return await _change_huddle(
        info.context,
        huddle_id,
        huddle.RecordHuddleNote,
        patient_id,
        note_id=new_id(),
        text=text,
        sensitivity=tuple(sensitivity or ()),
    )


async def raise_action_item(
    info: Info,
    huddle_id: strawberry.ID,
    title: str,
    patient_id: strawberry.ID | None = None,
    discipline: Discipline | None = None,
    assignee_id: strawberry.ID | None = None,
    due_date: date | None = None,
) -> Huddle:
    return await _change_huddle(
        info.context,
        huddle_id,
        huddle.RaiseActionItem,
        patient_id,
        task_id=new_id(),
        title=title,
        discipline=discipline,
        assignee_id=assignee_id,
        due_date=due_date,
    )


async def _change_huddle(
    ctx: Context,
    huddle_id: str,
    command_type: type[Command],
    patient_id: str | None,
    **fields: object,
) -> Huddle:
    meeting, access = await guard.load(ctx, HUDDLE, huddle_id, Action.WRITE)
    assert meeting.state is not None
    team_id = meeting.state.team_id
    if patient_id is not None:
        fields["patient_id"] = patient_id
    command = build(command_type, huddle_id=huddle_id, **fields)
    await guard.patient_on_team(ctx, patient_id, team_id, "this huddle's team")
    guard.assignee_on_team(access, getattr(command, "assignee_id", None))
    loaded = await ctx.handler.execute(
        HUDDLE,
        huddle_id,
        command,
        caller=ctx.caller(),
        scope=Scope(team_id, patient_id),
        known=meeting,
    )
    return Huddle.from_state(loaded, await guard.changed(ctx, access, HUDDLE, huddle_id, loaded))


# --- subscriptions -------------------------------------------------------------------


async def huddle_changed(info: Info, huddle_id: strawberry.ID) -> AsyncGenerator[Huddle, None]:
    ctx = info.context
    try:
        first, access = await guard.load(ctx, HUDDLE, huddle_id, Action.READ)
        assert first.state is not None
        live = updates(ctx, first.state.team_id, "huddle", access, huddle_id)
        async for update, current in live:
            loaded = await ctx.repository.load(HUDDLE, huddle_id)
            assert loaded.state is not None
            patients = loaded.state.patients()
            shown = await view(ctx, current, PUSH, "Huddle", huddle_id, patients, live=True)
            meeting = Huddle.from_state(loaded, shown)
            meeting.position = None if update.position is None else Position(update.position)
            # Its action items are decided (and recorded) before the push leaves.
            await resolve_action_items(ctx, meeting)
            await pushed(ctx, shown)
            yield meeting
    finally:
        await flush(ctx)  # a refusal, at the start or after a roster change


@strawberry.type
class HuddlesQuery:
    huddle: Huddle | None = strawberry.field(resolver=resolve_huddle)


@strawberry.type
class HuddlesMutation:
    schedule_huddle: Huddle = strawberry.mutation(resolver=schedule_huddle)
    open_huddle: Huddle = strawberry.mutation(resolver=open_huddle)
    record_huddle_note: Huddle = strawberry.mutation(resolver=record_huddle_note)
    raise_action_item: Huddle = strawberry.mutation(
        resolver=raise_action_item,
        description="Raise an action item; it becomes a task on the team's board.",
    )
    close_huddle: Huddle = strawberry.mutation(
        resolver=close_huddle, description="Close the huddle; nothing more is added."
    )


@strawberry.type
class HuddlesSubscription:
    huddle_changed: AsyncGenerator[Huddle, None] = strawberry.subscription(
        resolver=huddle_changed,
        description="The huddle after each change to it or its action items (members only).",
    )
