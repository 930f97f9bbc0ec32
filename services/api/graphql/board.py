"""The team's board: the Task, BoardColumn, Board and BoardEvent types, `board`, the task
changes (createTask, moveTask, assignTask) and the live `boardChanged` subscription."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from datetime import date, datetime, timedelta

import strawberry
from strawberry.dataloader import DataLoader

from schemas.audit import AccessAction
from schemas.board import BoardChange, BoardUpdate
from services.api.graphql import freshness, guard
from services.api.graphql.access import (
    RESTRICTED,
    Access,
    View,
    authorize,
    flush,
    pushed,
    view,
    withheld,
)
from services.api.graphql.context import Context, Info
from services.api.graphql.live import PUSH, same_for_every_viewer, updates
from services.api.graphql.scalars import (
    Discipline,
    Position,
    Sensitivity,
    TaskSource,
    TaskStatus,
    optional_id,
)
from services.common.aggregates import NEW, Loaded, Scope, new_id
from services.common.commands import build
from services.common.domain import touched
from services.common.errors import InvalidInput, NotPermitted
from services.common.policy import Action
from services.plans.domain import patient
from services.plans.domain.patient import PATIENT
from services.tasks import domain, projector, store
from services.tasks.domain import TASK

# A consent change re-decides the closed cards of as far back (services.tasks.projector).
MAX_CLOSED_DAYS = projector.CLOSED_SHOWN.days


@strawberry.type(description="Who a task is assigned to.")
class Assignee:
    user_id: strawberry.ID
    name: str | None = strawberry.field(
        description="Their name on the team's roster; null once they are no longer on it."
    )


@strawberry.type(description="The patient a task is about, named.")
class TaskPatient:
    id: strawberry.ID
    name: str


@same_for_every_viewer
async def _patient(root: Task, info: Info) -> TaskPatient | None:
    """The patient the card is about: the card was shown, so the viewer may see it (and
    the board's read, or the push, recorded the access); null for a patient not on the
    card's team."""
    if root.patient_id is None:
        return None
    enrolled = await _patients(info.context).load(root.patient_id)
    if enrolled is None or enrolled.team_id != root.team_id:
        return None
    return TaskPatient(id=root.patient_id, name=enrolled.name)


def _patients(ctx: Context) -> DataLoader[str, patient.Patient | None]:
    """The patients of the cards of one operation, read together."""
    found: DataLoader[str, patient.Patient | None] | None = ctx.loaders.get("task_patients")
    if found is None:

        async def load(ids: list[str]) -> list[patient.Patient | None]:
            loaded = await ctx.repository.load_many(PATIENT, ids)
            by_id = {p.state.id: p.state for p in loaded if p.state is not None}
            return [by_id.get(i) for i in ids]

        found = DataLoader(load_fn=load)
        ctx.loaders["task_patients"] = found
    return found


@strawberry.type(description="A card on a team's board.")
class Task:
    id: strawberry.ID
    team_id: strawberry.ID
    patient_id: strawberry.ID | None
    plan_id: strawberry.ID | None
    title: str
    status: TaskStatus
    assignee_id: strawberry.ID | None
    discipline: Discipline | None
    due_date: date | None
    overdue: bool = strawberry.field(
        description="Due date passed (everywhere on Earth) and not DONE or CANCELLED."
    )
    sensitivity: list[Sensitivity]
    redacted: bool = strawberry.field(
        description="True when title and detail are withheld by the consent policy."
    )
    updated_at: datetime
    blocked_reason: str | None = strawberry.field(description="What a BLOCKED task waits for.")
    source: TaskSource = strawberry.field(description="Where the task came from.")
    urgent: bool = strawberry.field(description="A signal task a critical reading made urgent.")
    escalated: bool = strawberry.field(
        description="An urgent signal task left in TODO too long, escalated to the team's leads."
    )
    signal_count: int = strawberry.field(
        description="How many signals (readings out of range, silences) a signal task carries; "
        "0 for other tasks."
    )
    assignee: Assignee | None = strawberry.field(
        description="Who the task is assigned to, named as the team's roster names them."
    )
    patient: TaskPatient | None = strawberry.field(
        resolver=_patient,
        description="The patient the task is about (with the card's own access record); "
        "null when it is about none.",
    )

    @classmethod
    def seen(cls, task: domain.Task, view: View, *, now: datetime) -> Task | None:
        """The card as the viewer may see it (redacted per consent); None when the
        policy refuses it outright."""
        decision = view.item(task.patient_id, task.sensitivity)
        if not decision.permitted:
            return None
        hide = decision.redacted
        return cls(
            id=strawberry.ID(task.id),
            team_id=strawberry.ID(task.team_id),
            patient_id=optional_id(task.patient_id),
            plan_id=optional_id(task.plan_id),
            title=RESTRICTED if hide else task.title,
            status=task.status,
            assignee_id=optional_id(task.assignee_id),
            discipline=task.discipline,
            due_date=task.due_date,
            overdue=task.overdue(now),
            sensitivity=list(task.sensitivity),
            redacted=hide,
            updated_at=task.updated_at,
            blocked_reason=withheld(task.blocked_reason, hide),
            source=TaskSource(task.source),
            urgent=task.urgent,
            escalated=task.escalated_at is not None,
            signal_count=task.signal_count,
            assignee=_assignee(task.assignee_id, view),
        )


def _withdrawn(task: domain.Task) -> Task:
    """A card the viewer may no longer see, as a REMOVED change says so: its id and status,
    nothing about the patient, what it asks, who does it or its tags (a GENETIC tag on a
    card refused would tell what it is)."""
    return Task(
        id=strawberry.ID(task.id),
        team_id=strawberry.ID(task.team_id),
        patient_id=None,
        plan_id=None,
        title=RESTRICTED,
        status=task.status,
        assignee_id=None,
        discipline=None,
        due_date=None,
        overdue=False,
        sensitivity=[],
        redacted=True,
        updated_at=task.updated_at,
        blocked_reason=None,
        source=TaskSource(task.source),
        urgent=False,
        escalated=False,
        signal_count=0,
        assignee=None,
    )


def _assignee(user_id: str | None, view: View) -> Assignee | None:
    if user_id is None:
        return None
    member = view.access.team.member(user_id)
    return Assignee(user_id=strawberry.ID(user_id), name=member.name if member else None)


def cards(tasks: Iterable[domain.Task], view: View, *, now: datetime) -> list[Task]:
    """The tasks the viewer may see, in the order given, each as they may see it."""
    return [card for t in tasks if (card := Task.seen(t, view, now=now)) is not None]


@strawberry.type(description="The tasks in one status, by due date (those without one last).")
class BoardColumn:
    status: TaskStatus
    tasks: list[Task]


@strawberry.type(description="A team's board: one column per task status, in status order.")
class Board:
    team_id: strawberry.ID
    columns: list[BoardColumn]
    as_of: datetime = strawberry.field(
        description="When the board was read; `overdue` is judged as of then."
    )
    position: Position = strawberry.field(
        description="The event-store position the board reflects: every event of the team "
        "up to it, none after. `boardChanged(after: position)` then tells every change "
        "since, none twice."
    )


@strawberry.type(description="A change on a team's board, as it happened.")
class BoardEvent:
    team_id: strawberry.ID
    task: Task
    change: str = strawberry.field(
        description="CREATED | MOVED | UPDATED | REMOVED (REMOVED: you may no longer see "
        "the card, after a consent changed; drop it)"
    )
    position: Position = strawberry.field(
        description="The event-store position this subscription is complete up to with this "
        "change: resume with `boardChanged(after:)` from the last one received. A change "
        "that shows several cards (a consent re-deciding a patient's cards) gives its "
        "position on its last card, and the one before it on the others."
    )


# --- queries -------------------------------------------------------------------------


async def board(
    info: Info,
    team_id: strawberry.ID,
    closed_days: int | None = 14,
    assignee_id: strawberry.ID | None = None,
    patient_id: strawberry.ID | None = None,
    discipline: Discipline | None = None,
    at_least: Position | None = None,
) -> Board:
    ctx = info.context
    access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="board")
    days = 14 if closed_days is None else closed_days
    if not 0 <= days <= MAX_CLOSED_DAYS:
        raise InvalidInput(f"closedDays must be between 0 and {MAX_CLOSED_DAYS}.")
    await freshness.caught_up(ctx, team_id, at_least, (freshness.BOARD,))
    now = ctx.now()
    async with (
        ctx.database.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        # One snapshot: the position says exactly which changes the cards hold.
        tasks = await store.team_tasks(conn, team_id, closed_since=now - timedelta(days=days))
        position = await freshness.position_of(conn, team_id, (freshness.BOARD,))
    # Filtered before the view: only the cards shown are decided and recorded.
    tasks = [t for t in tasks if _wanted(t, assignee_id, patient_id, discipline)]
    patients = touched((t.patient_id, t.sensitivity) for t in tasks)
    shown = await view(ctx, access, AccessAction.READ, "Board", team_id, patients)
    columns = {status: BoardColumn(status=status, tasks=[]) for status in TaskStatus}
    for card in cards(tasks, shown, now=now):
        columns[card.status].tasks.append(card)
    return Board(
        team_id=team_id, columns=list(columns.values()), as_of=now, position=Position(position)
    )


def _wanted(
    task: domain.Task,
    assignee_id: str | None,
    patient_id: str | None,
    discipline: Discipline | None,
) -> bool:
    """Whether the card passes the board's filters (each one given must match)."""
    return (
        (assignee_id is None or task.assignee_id == assignee_id)
        and (patient_id is None or task.patient_id == patient_id)
        and (discipline is None or task.discipline == discipline)
    )


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
        raise NotPermitted("The change was saved, but the task is no longer yours to see.")
    return card


# --- subscriptions -------------------------------------------------------------------


async def board_changed(
    info: Info, team_id: strawberry.ID, after: Position | None = None
) -> AsyncGenerator[BoardEvent, None]:
    ctx = info.context
    try:
        access = await authorize(ctx, team_id=team_id, action=Action.READ, resource="board")
        pushes = _Pushes(ctx, team_id, after)
        live = updates(ctx, team_id, "board", access, after=after, step=pushes.events)
        async for update, current in live:
            for event in await pushes.events(update, current):
                yield event
    finally:
        await flush(ctx)  # a refusal, at the start or after a roster change


class _Pushes:
    """What one boardChanged subscription pushes for each update, and the position it is
    complete up to (None until it is known)."""

    __slots__ = ("ctx", "last", "team_id")

    def __init__(self, ctx: Context, team_id: str, last: int | None) -> None:
        self.ctx, self.team_id, self.last = ctx, team_id, last

    async def events(self, update: BoardUpdate, current: Access) -> list[BoardEvent]:
        ctx, team_id = self.ctx, strawberry.ID(self.team_id)
        if update.kind == "consent" and update.position is not None:
            # The patient's cards as they stood at the change, decided as of now.
            shown = await _redecided(ctx, current, update)
            # Complete up to this change only with the last card of its last part.
            final = update.change is None
            events = [
                BoardEvent(
                    team_id=team_id,
                    task=card,
                    change=change,
                    position=Position(
                        update.position if final and i == len(shown) else update.position - 1
                    ),
                )
                for i, (card, change) in enumerate(shown, start=1)
            ]
            self.last = update.position if final else update.position - 1
            return events
        if update.task is None or update.change is None:
            return []
        state = store.task_from_card(update.task)
        # Decided for this subscriber against the consents as they stand now.
        seen = await view(ctx, current, PUSH, "Task", state.id, state.patients(), live=True)
        task = Task.seen(state, seen, now=ctx.now())
        await pushed(ctx, seen)
        if update.position is not None:
            self.last = update.position
        elif self.last is None:
            # A change no event made, before any this subscription gave: it is complete
            # up to no known position (the board's now could run ahead of changes still
            # on their way), so a resume from it starts afresh.
            self.last = 0
        if task is None:
            return []
        return [
            BoardEvent(
                team_id=team_id, task=task, change=update.change.value, position=Position(self.last)
            )
        ]


async def _redecided(ctx: Context, access: Access, update: BoardUpdate) -> list[tuple[Task, str]]:
    """The cards a consent change re-decides, decided afresh for this subscriber (UPDATED,
    or REMOVED when the policy now refuses one), recorded before they go."""
    tasks = [store.task_from_card(c) for c in update.tasks]
    if not tasks:
        return []
    now = ctx.now()
    patients = touched((t.patient_id, t.sensitivity) for t in tasks)
    shown = await view(ctx, access, PUSH, "Board", update.team_id, patients, live=True)
    changes: list[tuple[Task, str]] = []
    for t in tasks:
        card = Task.seen(t, shown, now=now)
        if card is None:
            changes.append((_withdrawn(t), BoardChange.REMOVED.value))
        else:
            changes.append((card, BoardChange.UPDATED.value))
    await pushed(ctx, shown)
    return changes


@strawberry.type
class BoardQuery:
    board: Board = strawberry.field(
        resolver=board,
        description="The team's board: open tasks, and those done or cancelled within "
        "closedDays days (default 14); assigneeId, patientId and discipline keep only the "
        "cards that match every one given. With atLeast (a position a mutation's answer "
        "gave in extensions.position), it answers once the board holds that change, "
        "waiting a few seconds at most (SERVICE_UNAVAILABLE after that).",
    )


@strawberry.type
class BoardMutation:
    create_task: Task = strawberry.mutation(
        resolver=create_task,
        description="Put a task on the team's board (TODO). dueDate may be up to 30 days "
        "past, for a task written down late.",
    )
    move_task: Task = strawberry.mutation(
        resolver=move_task,
        description="Move a task to another status; BLOCKED needs a reason. DONE and "
        "CANCELLED tasks can be reopened (TODO or IN_PROGRESS).",
    )
    assign_task: Task = strawberry.mutation(
        resolver=assign_task, description="Give an open task to a team member."
    )


@strawberry.type
class BoardSubscription:
    board_changed: AsyncGenerator[BoardEvent, None] = strawberry.subscription(
        resolver=board_changed,
        description="Each change on the team's board, in order (members only). With after "
        "(a Board's position, or the last BoardEvent's), first every change since it that "
        "you missed, then the live ones: none lost, none twice. A position older than the "
        "changes kept is refused with CONFLICT and extensions.refetch: read the board again "
        "and subscribe after its position.",
    )
