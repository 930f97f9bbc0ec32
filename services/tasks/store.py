"""The board read models in PostgreSQL: loading what a batch touches, writing what the
projector made of it (with its notices, in the same transaction), and the board and
agenda queries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import orjson

from schemas import codec
from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.common import Discipline, PlanStatus, Sensitivity, TaskStatus
from services.common import projection
from services.common.db import Conn
from services.common.projection import Positioned
from services.tasks import projector
from services.tasks.domain import OPEN, Task
from services.tasks.projector import Applied, Board, HuddleSlot, Notice, PlanSchedule

# Taken shared by each projector batch and exclusively by `carecoord rebuild`, so a
# rebuild never interleaves with a worker's writes.
BOARD_LOCK = 0x6361_7265_626F_6172  # "careboar"
OPEN_STATUSES = [s.value for s in OPEN]

# The columns of each read model that hold board content (overdue_announced, the timer's
# note of what it told subscribers, is not among them).
TASK_COLUMNS = (
    "task_id, team_id, title, source, status, patient_id, plan_id, intervention_id, "
    "huddle_id, discipline, assignee_id, due_date, sensitivity, blocked_reason, "
    "created_at, updated_at, signal_count, urgent_since, escalated_at"
)
PLAN_COLUMNS = "plan_id, team_id, patient_id, status, next_review_date, reviewed_at"
HUDDLE_COLUMNS = "huddle_id, team_id, status, scheduled_for, closed_at"


# The most records (tasks, plans and huddles) a rebuild keeps in memory: past it, each batch
# reads what it touches from the tables again (about 1 KB a task).
REMEMBERED = 100_000


class BoardProjection:
    """The board projector as apply_batch (and a rebuild) runs it."""

    name = "board"
    lock: int | None = BOARD_LOCK

    def __init__(
        self, *, notify: Callable[[str, int], bool] | None = None, remember: bool = False
    ) -> None:
        # Which events' notices reach subscribers, by team and position: all of them,
        # unless a rebuild says which ones they heard of already.
        self.notify = notify or (lambda _team, _position: True)
        # `remember`, for a rebuild into tables that held nothing when it began: every
        # record this projection writes is kept, so a batch takes what it touches from
        # here and not from the tables (which hold nothing else). Past REMEMBERED records
        # it is dropped, and each batch reads the tables again.
        self.memory: Board | None = Board() if remember else None

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None:
        batch = [item for item in batch if type(item.envelope.payload) in projector.HANDLED_TYPES]
        if not batch:
            return
        wanted = projector.wanted(item.envelope for item in batch)
        board = await load(conn, wanted) if self.memory is None else recall(self.memory, wanted)
        dirty = Board()
        notices: list[Notice] = []
        for item in batch:
            applied = projector.apply(board, item.envelope, position=item.position)
            projector.merge(board, applied)
            projector.merge(dirty, applied)
            if self.notify(item.envelope.team_id, item.position):
                notices += applied.notices
        await save(conn, dirty, notices)
        # Remembered only once written: a batch that fails leaves the memory as the
        # tables are, so its events can be applied again one by one.
        if self.memory is not None:
            self._remember(dirty)

    def _remember(self, written: Board) -> None:
        memory = self.memory
        assert memory is not None
        memory.tasks.update(written.tasks)
        memory.plans.update(written.plans)
        memory.huddles.update(written.huddles)
        if len(memory.tasks) + len(memory.plans) + len(memory.huddles) > REMEMBERED:
            self.memory = None


def recall(memory: Board, wanted: projector.Wanted) -> Board:
    """What `load` would read of `wanted` from tables holding exactly `memory`."""
    board = Board(
        tasks={i: memory.tasks[i] for i in wanted.task_ids if i in memory.tasks},
        plans={i: memory.plans[i] for i in wanted.plan_ids if i in memory.plans},
        huddles={i: memory.huddles[i] for i in wanted.huddle_ids if i in memory.huddles},
    )
    if wanted.patient_ids:
        board.tasks.update(
            (t.id, t)
            for t in memory.tasks.values()
            if t.patient_id in wanted.patient_ids and t.sensitivity
        )
    return board


# --- rows <-> records ----------------------------------------------------------------


def task_from_row(row: Any) -> Task:
    return Task(
        id=row["task_id"],
        team_id=row["team_id"],
        title=row["title"],
        source=row["source"],
        status=TaskStatus(row["status"]),
        patient_id=row["patient_id"],
        plan_id=row["plan_id"],
        intervention_id=row["intervention_id"],
        huddle_id=row["huddle_id"],
        discipline=Discipline(row["discipline"]) if row["discipline"] else None,
        assignee_id=row["assignee_id"],
        due_date=row["due_date"],
        sensitivity=tuple(Sensitivity(s) for s in row["sensitivity"]),
        blocked_reason=row["blocked_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        signal_count=row["signal_count"],
        urgent_since=row["urgent_since"],
        escalated_at=row["escalated_at"],
    )


def _task_row(t: Task) -> tuple[Any, ...]:
    return (
        t.id,
        t.team_id,
        t.title,
        t.source,
        t.status.value,
        t.patient_id,
        t.plan_id,
        t.intervention_id,
        t.huddle_id,
        t.discipline.value if t.discipline else None,
        t.assignee_id,
        t.due_date,
        [s.value for s in t.sensitivity],
        t.blocked_reason,
        t.created_at or t.updated_at,
        t.updated_at,
        t.signal_count,
        t.urgent_since,
        t.escalated_at,
    )


def card(task: Task) -> TaskCard:
    fields = {k: v for k, v in asdict(task).items() if k not in ("id", "created_at")}
    return TaskCard(task_id=task.id, created_at=task.created_at or task.updated_at, **fields)


def task_from_card(c: TaskCard) -> Task:
    return Task(id=c.task_id, **c.model_dump(exclude={"task_id"}))


# --- the projector's reads and writes ------------------------------------------------


async def load(conn: Conn, wanted: projector.Wanted) -> Board:
    board = Board()
    if wanted.task_ids:
        rows = await conn.fetch(
            f"SELECT {TASK_COLUMNS} FROM board_tasks WHERE task_id = ANY($1::text[])",  # noqa: S608 - constant column list
            list(wanted.task_ids),
        )
        board.tasks = {r["task_id"]: task_from_row(r) for r in rows}
    if wanted.patient_ids:
        rows = await conn.fetch(
            f"SELECT {TASK_COLUMNS} FROM board_tasks "  # noqa: S608 - constant column list
            "WHERE patient_id = ANY($1::text[]) AND sensitivity <> '{}'",
            list(wanted.patient_ids),
        )
        board.tasks.update((r["task_id"], task_from_row(r)) for r in rows)
    if wanted.plan_ids:
        rows = await conn.fetch(
            f"SELECT {PLAN_COLUMNS} FROM board_plans WHERE plan_id = ANY($1::text[])",  # noqa: S608 - constant column list
            list(wanted.plan_ids),
        )
        board.plans = {
            r["plan_id"]: PlanSchedule(
                r["plan_id"],
                r["team_id"],
                r["patient_id"],
                PlanStatus(r["status"]),
                r["next_review_date"],
                r["reviewed_at"],
            )
            for r in rows
        }
    if wanted.huddle_ids:
        rows = await conn.fetch(
            f"SELECT {HUDDLE_COLUMNS} FROM board_huddles WHERE huddle_id = ANY($1::text[])",  # noqa: S608 - constant column list
            list(wanted.huddle_ids),
        )
        board.huddles = {r["huddle_id"]: HuddleSlot(*r.values()) for r in rows}
    return board


# Types of the board_tasks columns, in TASK_COLUMNS order, for the array each is sent in.
# sensitivity (text[]) goes as the text of each row's array: unnest cannot take an array
# of arrays of different lengths.
_TASK_TYPES = (
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "date", "text", "text", "timestamptz", "timestamptz", "integer", "timestamptz",
    "timestamptz",
)  # fmt: skip
_SENSITIVITY = TASK_COLUMNS.split(", ").index("sensitivity")
_TASK_CELLS = [f"c{n}::text[]" if n == _SENSITIVITY else f"c{n}" for n in range(len(_TASK_TYPES))]
_TASK_UPSERT = (
    f"INSERT INTO board_tasks ({TASK_COLUMNS}) "  # noqa: S608 - constant column lists
    f"SELECT {', '.join(_TASK_CELLS)} "
    "FROM unnest("
    + ", ".join(f"${n + 1}::{t}[]" for n, t in enumerate(_TASK_TYPES))
    + f") AS u({', '.join(f'c{n}' for n in range(len(_TASK_TYPES)))}) "
    "ON CONFLICT (task_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in TASK_COLUMNS.split(", ") if c != "task_id")
)


def _array_text(values: Sequence[str]) -> str:
    """A text[] value as PostgreSQL reads it from text: each element quoted."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


async def save(conn: Conn, board: Board, notices: Sequence[Notice] = ()) -> None:
    """Write every record in `board` (each replaces the row of its id), and queue
    `notices` as enqueue does: the tasks and the notices in one statement."""
    if board.tasks:
        # One statement of arrays, a column each: the server parses and plans it once for
        # the batch, where executemany ran the insert once a task.
        rows = [_task_row(t) for t in board.tasks.values()]
        columns = [list(column) for column in zip(*rows, strict=True)]
        columns[_SENSITIVITY] = [_array_text(tags) for tags in columns[_SENSITIVITY]]
        if notices:
            await conn.execute(_TASKS_AND_QUEUE, *columns, *_queued(notices))
            notices = ()
        else:
            await conn.execute(_TASK_UPSERT, *columns)
    if board.plans:
        await conn.executemany(
            f"INSERT INTO board_plans ({PLAN_COLUMNS}) "  # noqa: S608 - constant column list
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (plan_id) DO UPDATE SET "
            "status = EXCLUDED.status, next_review_date = EXCLUDED.next_review_date, "
            "reviewed_at = EXCLUDED.reviewed_at",
            [
                (
                    p.plan_id,
                    p.team_id,
                    p.patient_id,
                    p.status.value,
                    p.next_review_date,
                    p.reviewed_at,
                )
                for p in board.plans.values()
            ],
        )
    if board.huddles:
        await conn.executemany(
            f"INSERT INTO board_huddles ({HUDDLE_COLUMNS}) "  # noqa: S608 - constant column list
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (huddle_id) DO UPDATE SET "
            "status = EXCLUDED.status, closed_at = EXCLUDED.closed_at",
            [
                (h.huddle_id, h.team_id, h.status, h.scheduled_for, h.closed_at)
                for h in board.huddles.values()
            ],
        )
    await enqueue(conn, notices)


def _card_fields(task: Task) -> dict[str, Any]:
    """The fields of card(task), left for orjson to write: building and dumping a model per
    notice was most of the projector's time (the hub validates what it receives). The
    task's own attributes are its fields (a frozen dataclass), copied at once."""
    card_fields = dict(vars(task))
    card_fields["task_id"] = card_fields.pop("id")
    if card_fields["created_at"] is None:
        card_fields["created_at"] = task.updated_at
    return card_fields


def _body(notice: Notice) -> bytes:
    update = {
        "team_id": notice.team_id,
        "kind": notice.kind,
        "change": notice.change.value if notice.change else None,
        "task": _card_fields(notice.task) if notice.task else None,
        "huddle_id": notice.huddle_id,
        "plan_id": notice.plan_id,
        "goal_id": notice.goal_id,
        "patient_id": notice.patient_id,
        "position": notice.position,
        "tasks": [_card_fields(t) for t in notice.tasks] or None,
    }
    return orjson.dumps({k: v for k, v in update.items() if v is not None})


# What the change log keeps: what a board subscriber replays (a roster change only ends
# subscriptions, and a goal's progress has its own subscription).
_LOGGED = frozenset({"task", "huddle", "consent"})
_NO_BOUND = 2**63 - 1


async def enqueue(conn: Conn, notices: Sequence[Notice]) -> None:
    """Queue notices for care.board-updates, in this transaction (seq keeps their order),
    and log those an event made, for subscribers that resume after a position."""
    if notices:
        await conn.execute(_QUEUE, *_queued(notices))


def _queue(first: int) -> str:
    """The statement queueing notices (its parameters from ${first}, as _queued gives
    them): arrays, one statement for both tables, seq and id drawn in the arrays' order. A
    body is kept as a jsonb string holding the JSON text (to_jsonb of text), as the rows
    written through the pool's jsonb codec always were: their readers parse that text."""
    n = [f"${first + k}" for k in range(5)]
    return (
        "queued AS ("  # noqa: S608 - parameter numbers only
        " INSERT INTO board_outbox (team_id, body) SELECT t, to_jsonb(b)"
        f" FROM unnest({n[0]}::text[], {n[1]}::text[]) WITH ORDINALITY AS u(t, b, n) ORDER BY n)"
        " INSERT INTO board_changes (team_id, position, body) SELECT t, p, to_jsonb(b)"
        f" FROM unnest({n[2]}::text[], {n[3]}::bigint[], {n[4]}::text[])"
        " WITH ORDINALITY AS u(t, p, b, n) ORDER BY n"
    )


_QUEUE = "WITH " + _queue(1)
# The tasks written and the notices queued in one round trip.
_TASKS_AND_QUEUE = f"WITH saved AS ({_TASK_UPSERT}), " + _queue(len(_TASK_TYPES) + 1)


def _queued(notices: Sequence[Notice]) -> tuple[list[Any], ...]:
    """The parameters of _queue: every notice's team and body, and those the change log
    keeps with their positions."""
    bodies = [(n, _body(n).decode()) for n in notices]
    logged = [
        (n.team_id, n.position, body)
        for n, body in bodies
        if n.position is not None and n.kind in _LOGGED
    ]
    teams, positions, logged_bodies = zip(*logged, strict=True) if logged else ((), (), ())
    return (
        [n.team_id for n, _ in bodies],
        [body for _, body in bodies],
        list(teams),
        list(positions),
        list(logged_bodies),
    )


@dataclass(frozen=True)
class Changes:
    """A team's logged changes after a position, or why they cannot all be given."""

    updates: list[BoardUpdate]
    # The position the log starts after: a resume from before it must read the board.
    horizon: int
    # More changes than were asked for: the subscriber must read the board.
    more: bool


async def changes_after(
    conn: Conn, team_id: str, after: int, *, limit: int, max_bytes: int | None = None
) -> Changes:
    """The team's logged changes after `after`, in order (at most `limit`, and at most
    `max_bytes` of logged bodies: past either, `more`). Reads the horizon and the log in
    one snapshot, so a prune in between cannot open a gap."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        horizon = await conn.fetchval(
            "SELECT position FROM board_change_horizon WHERE team_id = $1", team_id
        )
        # Bodies past the byte bound stay in the database (NULL here): a consent change
        # carries every tagged card of its patient, so a count alone bounds nothing.
        rows = await conn.fetch(
            "SELECT id, CASE WHEN upto <= $4 THEN body END AS body FROM ("
            "  SELECT id, position, body,"
            "         sum(octet_length(body::text)) OVER (ORDER BY position, id) AS upto"
            "    FROM board_changes WHERE team_id = $1 AND position > $2"
            "   ORDER BY position, id LIMIT $3) AS logged "
            "ORDER BY position, id",
            team_id,
            after,
            limit + 1,
            _NO_BOUND if max_bytes is None else max_bytes,
        )
    kept = [r for r in rows[:limit] if r["body"] is not None]
    updates = [
        BoardUpdate.model_validate({**orjson.loads(r["body"]), "seq": r["id"]}) for r in kept
    ]
    return Changes(updates, horizon or 0, more=len(rows) > len(kept))


async def prune_changes(conn: Conn, older_than: datetime, *, limit: int = 10_000) -> int:
    """Drop logged changes made before `older_than` (at most `limit`, oldest first),
    moving each team's horizon past them; returns how many went."""
    async with conn.transaction():
        return int(
            await conn.fetchval(
                """
                WITH gone AS (
                    DELETE FROM board_changes WHERE id IN (
                        SELECT id FROM board_changes WHERE created_at < $1
                        ORDER BY created_at LIMIT $2)
                    RETURNING team_id, position
                ), moved AS (
                    INSERT INTO board_change_horizon (team_id, position)
                    SELECT team_id, max(position) FROM gone GROUP BY team_id
                    ON CONFLICT (team_id) DO UPDATE
                    SET position = GREATEST(board_change_horizon.position, EXCLUDED.position)
                    RETURNING 1
                )
                SELECT count(*) FROM gone
                """,
                older_than,
                limit,
            )
        )


@dataclass(frozen=True, slots=True)
class Queued:
    """A board update waiting in the outbox: its seq, its team (the message key) and the
    message as published."""

    seq: int
    team_id: str
    value: bytes

    def update(self) -> BoardUpdate:
        return codec.decode_board_update(self.value)


async def take_outbox(conn: Conn, limit: int) -> list[Queued]:
    rows = await conn.fetch(
        "SELECT seq, team_id, body FROM board_outbox ORDER BY seq LIMIT $1", limit
    )
    return [
        Queued(r["seq"], r["team_id"], codec.publish_queued_board_update(r["seq"], r["body"]))
        for r in rows
    ]


async def drop_outbox(conn: Conn, seqs: Sequence[int]) -> None:
    # Exactly these: a lower seq committed later than the ones read is still to publish.
    await conn.execute("DELETE FROM board_outbox WHERE seq = ANY($1::bigint[])", list(seqs))


async def announce_overdue(conn: Conn, before: date, limit: int) -> list[Task]:
    """Open tasks due before `before` that subscribers have not been told are overdue:
    mark them told and queue an UPDATED notice for each (in the caller's transaction)."""
    rows = await conn.fetch(
        f"""
        UPDATE board_tasks SET overdue_announced = true
        WHERE task_id IN (
            SELECT task_id FROM board_tasks
            WHERE status = ANY($1::text[]) AND due_date < $2 AND NOT overdue_announced
            ORDER BY due_date LIMIT $3 FOR UPDATE SKIP LOCKED)
        RETURNING {TASK_COLUMNS}
        """,  # noqa: S608 - constant column list
        OPEN_STATUSES,
        before,
        limit,
    )
    tasks = [task_from_row(r) for r in rows]
    await enqueue(
        conn,
        [Notice(t.team_id, "task", BoardChange.UPDATED, task=t) for t in tasks],
    )
    return tasks


# --- queries -------------------------------------------------------------------------


async def team_tasks(conn: Conn, team_id: str, *, closed_since: datetime) -> list[Task]:
    """The team's open tasks, and those closed since then; by due date (none last)."""
    rows = await conn.fetch(
        f"""
        SELECT {TASK_COLUMNS} FROM board_tasks
        WHERE team_id = $1 AND status = ANY($2::text[])
        UNION ALL
        SELECT {TASK_COLUMNS} FROM board_tasks
        WHERE team_id = $1 AND status IN ('DONE', 'CANCELLED') AND updated_at >= $3
        ORDER BY due_date NULLS LAST, created_at, task_id
        """,  # noqa: S608 - constant column list
        team_id,
        OPEN_STATUSES,
        closed_since,
    )
    return [task_from_row(r) for r in rows]


@dataclass(frozen=True)
class Agenda:
    overdue: list[Task]
    blocked: list[Task]
    plan_ids: list[str]
    since: datetime | None


async def agenda(conn: Conn, team_id: str, *, overdue_before: date, review_by: date) -> Agenda:
    rows = await conn.fetch(
        f"""
        SELECT {TASK_COLUMNS} FROM board_tasks
        WHERE team_id = $1 AND status = ANY($2::text[])
          AND (status = 'BLOCKED' OR due_date < $3)
        ORDER BY due_date NULLS LAST, created_at, task_id
        """,  # noqa: S608 - constant column list
        team_id,
        OPEN_STATUSES,
        overdue_before,
    )
    tasks = [task_from_row(r) for r in rows]
    plan_ids = await conn.fetch(
        """
        SELECT plan_id FROM board_plans
        WHERE team_id = $1 AND next_review_date <= $2 AND status <> ALL($3::text[])
        ORDER BY next_review_date, plan_id
        """,
        team_id,
        review_by,
        [s.value for s in projector.FINISHED_PLANS],
    )
    since = await conn.fetchval(
        "SELECT max(closed_at) FROM board_huddles WHERE team_id = $1 AND closed_at IS NOT NULL",
        team_id,
    )
    return Agenda(
        overdue=[t for t in tasks if t.due_date is not None and t.due_date < overdue_before],
        blocked=[t for t in tasks if t.status is TaskStatus.BLOCKED],
        plan_ids=[r["plan_id"] for r in plan_ids],
        since=since,
    )


async def applied_position(conn: Conn, team_id: str) -> int:
    """The highest event-store position the team's board reflects (0: none yet)."""
    return await projection.position(conn, BoardProjection.name, team_id)


async def patient_tasks(conn: Conn, *, team_id: str, patient_id: str) -> list[Task]:
    """The patient's tasks on their team's board, open and closed, oldest first. (The
    board is a projection: a task created a moment ago may not be on it yet.)"""
    rows = await conn.fetch(
        f"SELECT {TASK_COLUMNS} FROM board_tasks "  # noqa: S608 - constant column list
        "WHERE team_id = $1 AND patient_id = $2 ORDER BY created_at, task_id",
        team_id,
        patient_id,
    )
    return [task_from_row(r) for r in rows]


__all__ = ["Applied", "BoardProjection", "card", "task_from_card"]
