"""Board queries, task mutations and the live subscriptions of the tasks service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import date, timedelta
from typing import Any

import strawberry
from starlette.websockets import WebSocket

from schemas.audit import AccessAction
from schemas.board import BoardUpdate
from schemas.common import Discipline, Sensitivity, TaskStatus
from services.api.access import Access, authorize, flush, pushed, view
from services.api.context import Context
from services.api.errors import Forbidden
from services.api.fanout import OVERFLOW_CLOSE_CODE, OVERFLOW_REASON, Hub, Overflowed
from services.common.commands import build
from services.common.domain import InvalidInput, touched
from services.common.policy import Action
from services.plans.domain.huddle import HUDDLE
from services.plans.gql import guard
from services.plans.gql.mutations import new_id
from services.plans.gql.types import Huddle, Info, resolve_action_items
from services.plans.handlers import NEW, Loaded, Scope
from services.tasks import domain, store
from services.tasks.domain import TASK
from services.tasks.gql.types import Board, BoardColumn, BoardEvent, Task, cards

MAX_CLOSED_DAYS = 366
PUSH = AccessAction.SUBSCRIBE_PUSH


async def board(info: Info, team_id: strawberry.ID, closed_days: int | None = 14) -> Board:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="board")
    days = 14 if closed_days is None else closed_days
    if not 0 <= days <= MAX_CLOSED_DAYS:
        raise InvalidInput(f"closedDays must be between 0 and {MAX_CLOSED_DAYS}.")
    now = ctx.now()
    async with ctx.database.acquire() as conn:
        tasks = await store.team_tasks(conn, team_id, closed_since=now - timedelta(days=days))
    patients = touched((t.patient_id, t.sensitivity) for t in tasks)
    shown = await view(ctx, access, AccessAction.READ, "Board", team_id, patients)
    columns = {status: BoardColumn(status=status, tasks=[]) for status in TaskStatus}
    for card in cards(tasks, shown, now=now):
        columns[card.status].tasks.append(card)
    return Board(team_id=team_id, columns=list(columns.values()), as_of=now)


# --- mutations -----------------------------------------------------------------------


async def create_task(
    info: Info,
    team_id: strawberry.ID,
    title: str,
    patient_id: strawberry.ID | None = None,
    discipline: Discipline | None = None,
    assignee_id: strawberry.ID | None = None,
    due_date: date | None = None,
    sensitivity: list[Sensitivity] | None = None,
) -> Task:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.WRITE, resource="team")
    task_id = new_id()
    command = build(
        domain.CreateTask,
        task_id=task_id,
        team_id=team_id,
        title=title,
        patient_id=patient_id,
        discipline=discipline,
        assignee_id=assignee_id,
        due_date=due_date,
        sensitivity=tuple(sensitivity or ()),
    )
    await guard.patient_on_team(ctx, command.patient_id, team_id, "this team")
    guard.assignee_on_team(access, command.assignee_id)
    loaded = await ctx.handler.execute(
        TASK,
        task_id,
        command,
        caller=ctx.caller(),
        scope=Scope(team_id, command.patient_id),
        known=NEW,
    )
    return await _answer(ctx, access, loaded, created=True)


async def move_task(
    info: Info, task_id: strawberry.ID, status: TaskStatus, reason: str | None = None
) -> Task:
    command = build(domain.MoveTask, task_id=task_id, status=status, reason=reason)
    return await _change_task(info.context, command, None)


async def assign_task(info: Info, task_id: strawberry.ID, assignee_id: strawberry.ID) -> Task:
    command = build(domain.AssignTask, task_id=task_id, assignee_id=assignee_id)
    return await _change_task(info.context, command, command.assignee_id)


async def _change_task(
    ctx: Context, command: domain.MoveTask | domain.AssignTask, assignee_id: str | None
) -> Task:
    task, access = await guard.load(ctx, TASK, command.task_id, Action.WRITE, one_patient=True)
    assert task.state is not None
    guard.assignee_on_team(access, assignee_id)
    loaded = await ctx.handler.execute(
        TASK,
        command.task_id,
        command,
        caller=ctx.caller(),
        scope=Scope(task.state.team_id, task.state.patient_id),
        known=task,
    )
    return await _answer(ctx, access, loaded)


async def _answer(
    ctx: Context, access: Access, loaded: Loaded[domain.Task], *, created: bool = False
) -> Task:
    """The task as changed, as the caller may see it."""
    assert loaded.state is not None
    shown = await guard.changed(ctx, access, TASK, loaded.state.id, loaded, created=created)
    card = Task.seen(loaded.state, shown, now=ctx.now())
    if card is None:  # only if a consent changed between the gate and now
        raise Forbidden("The change was saved, but the task is no longer yours to see.")
    return card


# --- subscriptions -------------------------------------------------------------------


def _hub(ctx: Context) -> Hub:
    if ctx.hub is None:
        # Only an API started without a broker has no hub; that is a deployment fault.
        raise RuntimeError("live updates need care.board-updates (CARECOORD_KAFKA_BOOTSTRAP)")
    return ctx.hub


_CLOSE_GRACE_SECONDS = 30.0
# Closes in flight (the event loop keeps only weak references to tasks).
_closing: set[asyncio.Future[None]] = set()


def _subscribe(ctx: Context, team_id: str, huddle_id: str | None = None) -> Any:
    def cut_off() -> None:
        # A WebSocket whose queue overflowed is closed, saying why; the client reconnects
        # and refetches. (Over HTTP the subscription just ends.)
        socket = ctx.response
        if isinstance(socket, WebSocket):
            closing = asyncio.ensure_future(
                socket.close(code=OVERFLOW_CLOSE_CODE, reason=OVERFLOW_REASON)
            )
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    return _hub(ctx).subscribe(team_id, huddle_id=huddle_id, on_overflow=cut_off)


async def _updates(
    ctx: Context, team_id: str, resource: str, access: Access, huddle_id: str | None = None
) -> AsyncGenerator[tuple[BoardUpdate, Access], None]:
    """The team's updates for one subscription, each with the caller's access as of it,
    until its queue overflows; a roster change re-checks that the caller is still a
    member (FORBIDDEN ends the subscription)."""
    with _subscribe(ctx, team_id, huddle_id) as sub:
        while True:
            try:
                update = await sub.next()
            except Overflowed:
                if isinstance(ctx.response, WebSocket):
                    # The socket is closing; its end cancels this operation. Returning
                    # would make the server send "complete" on a closed socket.
                    await asyncio.sleep(_CLOSE_GRACE_SECONDS)
                return
            if update.kind == "roster":
                ctx.teams.pop(team_id, None)  # the roster changed: read it again
                access = await authorize(
                    ctx, team_id=team_id, action=Action.READ, resource=resource
                )
            else:
                yield update, access


async def board_changed(info: Info, team_id: strawberry.ID) -> AsyncGenerator[BoardEvent, None]:
    ctx = info.context
    try:
        access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="board")
        async for update, current in _updates(ctx, team_id, "board", access):
            if update.task is not None and update.change is not None:
                state = store.task_from_card(update.task)
                # Decided for this subscriber against the consents as they stand now.
                shown = await view(
                    ctx, current, PUSH, "Task", state.id, state.patients(), live=True
                )
                task = Task.seen(state, shown, now=ctx.now())
                await pushed(ctx, shown)
                if task is not None:
                    yield BoardEvent(team_id=team_id, task=task, change=update.change.value)
    finally:
        await flush(ctx)  # a refusal, at the start or after a roster change


async def huddle_changed(info: Info, huddle_id: strawberry.ID) -> AsyncGenerator[Huddle, None]:
    ctx = info.context
    try:
        first, access = await guard.load(ctx, HUDDLE, huddle_id, Action.READ)
        assert first.state is not None
        updates = _updates(ctx, first.state.team_id, "huddle", access, huddle_id)
        async for _update, current in updates:
            loaded = await ctx.repository.load(HUDDLE, huddle_id)
            assert loaded.state is not None
            patients = loaded.state.patients()
            shown = await view(ctx, current, PUSH, "Huddle", huddle_id, patients, live=True)
            meeting = Huddle.from_state(loaded, shown)
            # Its action items are decided (and recorded) before the push leaves.
            await resolve_action_items(ctx, meeting)
            await pushed(ctx, shown)
            yield meeting
    finally:
        await flush(ctx)  # a refusal, at the start or after a roster change
