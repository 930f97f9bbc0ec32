"""The care-signals read model in PostgreSQL: loading the records of the patients a batch
touches, writing what the pure projector made of them with the commands it owes the write
side (signal_outbox) in the same transaction, and the queries of the API and the timers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.common import Discipline, GoalStatus, PlanStatus, Sensitivity, TaskStatus
from services.common.db import Conn
from services.common.log import get_logger
from services.common.projection import Positioned
from services.tasks import monitoring
from services.tasks.domain import Task
from services.tasks.monitoring import GoalState, Latest, PlanState, Signals, Watch
from services.tasks.projector import Notice
from services.tasks.signal_aggregate import RaiseSignal
from services.tasks.store import TASK_COLUMNS, enqueue, task_from_row

log = get_logger(__name__)

# Taken shared by each batch and exclusively by `carecoord rebuild` (as the boards' lock).
SIGNALS_LOCK = 0x6361_7265_7369_676E  # "caresign"
# Taken by the one worker draining signal_outbox at a time, so one plan's signals are
# sent in store order (a later one first would make the Signal aggregate skip the earlier).
DRAIN_LOCK = 0x6361_7265_6472_6169  # "caredrai"

PLAN_COLUMNS = "plan_id, team_id, patient_id, status, active_since"
WATCH_COLUMNS = (
    "monitoring_id, plan_id, team_id, patient_id, measure_code, every_days, unit, low, high, "
    "critical_low, critical_high, discipline, sensitivity, active, started_at, "
    "signal_task_id, signals, silence_signalled"
)
GOAL_COLUMNS = (
    "goal_id, plan_id, team_id, patient_id, status, due_date, measure_code, comparator, "
    "value, high, unit"
)
LATEST_COLUMNS = (
    "patient_id, measure_code, team_id, latest_observation_id, latest_value, latest_at, "
    "previous_observation_id, previous_value, previous_at"
)
TABLES = {
    "signal_plans": ("plan_id", PLAN_COLUMNS),
    "signal_watches": ("monitoring_id", WATCH_COLUMNS),
    "signal_goals": ("goal_id", GOAL_COLUMNS),
    "signal_readings": ("patient_id || '/' || measure_code", LATEST_COLUMNS),
}


class SignalsProjection:
    """The signal processor's projection as apply_batch (and a rebuild) runs it. `emit`
    says which events' signals are owed to the write side (all, unless a rebuild says
    which were sent already); what is owed is sent after the commit (drain)."""

    name = "signals"
    lock: int | None = SIGNALS_LOCK

    def __init__(self, *, emit: Callable[[str, int], bool] | None = None) -> None:
        self.emit = emit or (lambda _team, _position: True)
        # Signals queued since the agent last asked (take_queued); a batch rolled back
        # after queuing some still counts them, so the drain may run once for nothing.
        self._queued = 0

    def take_queued(self) -> int:
        """How many signals this projection queued since the last call."""
        queued, self._queued = self._queued, 0
        return queued

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None:
        batch = [item for item in batch if type(item.envelope.payload) in monitoring.HANDLED_TYPES]
        if not batch:
            return
        records = await load(conn, monitoring.wanted(item.envelope for item in batch))
        dirty = Signals()
        owed: list[RaiseSignal] = []
        notices: list[Notice] = []
        for item in batch:
            applied = monitoring.apply(records, item.envelope, item.position)
            monitoring.merge(records, applied)
            monitoring.merge(dirty, applied)
            if self.emit(item.envelope.team_id, item.position):
                owed += applied.owed
                notices += [
                    Notice(m.team_id, "goal", plan_id=m.plan_id, goal_id=m.goal_id)
                    for m in applied.moved
                ]
        await save(conn, dirty)
        await owe(conn, owed)
        self._queued += len(owed)
        await enqueue(conn, notices)


# --- rows <-> records ----------------------------------------------------------------


def _plan(r: Any) -> PlanState:
    return PlanState(
        r["plan_id"], r["team_id"], r["patient_id"], PlanStatus(r["status"]), r["active_since"]
    )


def _watch(r: Any) -> Watch:
    return Watch(
        monitoring_id=r["monitoring_id"],
        plan_id=r["plan_id"],
        team_id=r["team_id"],
        patient_id=r["patient_id"],
        measure_code=r["measure_code"],
        every_days=r["every_days"],
        unit=r["unit"],
        low=r["low"],
        high=r["high"],
        critical_low=r["critical_low"],
        critical_high=r["critical_high"],
        discipline=Discipline(r["discipline"]),
        sensitivity=tuple(Sensitivity(s) for s in r["sensitivity"]),
        active=r["active"],
        started_at=r["started_at"],
        signal_task_id=r["signal_task_id"],
        signals=r["signals"],
        silence_signalled=r["silence_signalled"],
    )


def _goal(r: Any) -> GoalState:
    return GoalState(
        goal_id=r["goal_id"],
        plan_id=r["plan_id"],
        team_id=r["team_id"],
        patient_id=r["patient_id"],
        status=GoalStatus(r["status"]),
        due_date=r["due_date"],
        measure_code=r["measure_code"],
        comparator=r["comparator"],
        value=r["value"],
        high=r["high"],
        unit=r["unit"],
    )


def _latest(r: Any) -> Latest:
    return Latest(
        r["patient_id"],
        r["measure_code"],
        r["team_id"],
        r["latest_observation_id"],
        r["latest_value"],
        r["latest_at"],
        r["previous_observation_id"],
        r["previous_value"],
        r["previous_at"],
    )


async def _fetch(conn: Conn, where: str, *args: Any, readings: bool = True) -> Signals:
    """The records of each table matching `where` (a condition on their common columns;
    signal_readings, which belongs to no plan, only when `readings`)."""
    out = Signals()
    rows = await conn.fetch(f"SELECT {PLAN_COLUMNS} FROM signal_plans WHERE {where}", *args)  # noqa: S608 - constant columns and conditions
    out.plans = {r["plan_id"]: _plan(r) for r in rows}
    rows = await conn.fetch(f"SELECT {WATCH_COLUMNS} FROM signal_watches WHERE {where}", *args)  # noqa: S608 - constant columns and conditions
    out.watches = {r["monitoring_id"]: _watch(r) for r in rows}
    rows = await conn.fetch(f"SELECT {GOAL_COLUMNS} FROM signal_goals WHERE {where}", *args)  # noqa: S608 - constant columns and conditions
    out.goals = {r["goal_id"]: _goal(r) for r in rows}
    if not readings:
        return out
    rows = await conn.fetch(f"SELECT {LATEST_COLUMNS} FROM signal_readings WHERE {where}", *args)  # noqa: S608 - constant columns and conditions
    out.latest = {(r["patient_id"], r["measure_code"]): _latest(r) for r in rows}
    return out


async def load(conn: Conn, patient_ids: frozenset[str]) -> Signals:
    if not patient_ids:
        return Signals()
    return await _fetch(conn, "patient_id = ANY($1::text[])", list(patient_ids))


async def save(conn: Conn, s: Signals) -> None:
    """Write every record in `s` (each replaces the row of its key)."""
    await _upsert(
        conn,
        "signal_plans",
        PLAN_COLUMNS,
        "plan_id",
        [
            (p.plan_id, p.team_id, p.patient_id, p.status.value, p.active_since)
            for p in s.plans.values()
        ],
    )
    await _upsert(
        conn,
        "signal_watches",
        WATCH_COLUMNS,
        "monitoring_id",
        [
            (
                w.monitoring_id,
                w.plan_id,
                w.team_id,
                w.patient_id,
                w.measure_code,
                w.every_days,
                w.unit,
                w.low,
                w.high,
                w.critical_low,
                w.critical_high,
                w.discipline.value,
                [x.value for x in w.sensitivity],
                w.active,
                w.started_at,
                w.signal_task_id,
                w.signals,
                w.silence_signalled,
            )
            for w in s.watches.values()
        ],
    )
    await _upsert(
        conn,
        "signal_goals",
        GOAL_COLUMNS,
        "goal_id",
        [
            (
                g.goal_id,
                g.plan_id,
                g.team_id,
                g.patient_id,
                g.status.value,
                g.due_date,
                g.measure_code,
                g.comparator,
                g.value,
                g.high,
                g.unit,
            )
            for g in s.goals.values()
        ],
    )
    await _upsert(
        conn,
        "signal_readings",
        LATEST_COLUMNS,
        "patient_id, measure_code",
        [
            (
                r.patient_id,
                r.measure_code,
                r.team_id,
                r.observation_id,
                r.value,
                r.at,
                r.previous_observation_id,
                r.previous_value,
                r.previous_at,
            )
            for r in s.latest.values()
        ],
    )


async def _upsert(
    conn: Conn, table: str, columns: str, key: str, rows: list[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    names = columns.split(", ")
    keys = key.split(", ")
    values = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in keys)
    await conn.executemany(
        f"INSERT INTO {table} ({columns}) VALUES ({values}) "  # noqa: S608 - constant names
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}",
        rows,
    )


# --- what is owed to the write side --------------------------------------------------


async def owe(conn: Conn, commands: Sequence[RaiseSignal]) -> None:
    """Queue RaiseSignal commands (in this transaction) for the drain to send."""
    if commands:
        await conn.executemany(
            "INSERT INTO signal_outbox (monitoring_id, body) VALUES ($1, $2::jsonb)",
            [(c.monitoring_id, c.model_dump_json()) for c in commands],
        )


@dataclass(frozen=True)
class Owed:
    seqs: list[int]
    commands: list[RaiseSignal]
    # The queued rows each command (by monitoring plan) was merged from.
    rows: dict[str, list[int]]


async def take_owed(conn: Conn, limit: int) -> Owed:
    """The oldest queued commands, one per monitoring plan (its queued readings merged, in
    store order), locked until the caller's transaction ends. A row this code cannot read
    (written by another version) is left queued and logged by its seq, and holds up nothing."""
    rows = await conn.fetch(
        "SELECT seq, monitoring_id, body FROM signal_outbox ORDER BY seq LIMIT $1 FOR UPDATE",
        limit,
    )
    merged: dict[str, RaiseSignal] = {}
    seqs: dict[str, list[int]] = {}
    for r in rows:
        try:
            command = RaiseSignal.model_validate(orjson.loads(r["body"]))
        except (ValueError, orjson.JSONDecodeError) as exc:  # the text may quote a title
            log.error("signal_unreadable", seq=r["seq"], error=type(exc).__name__)
            continue
        seqs.setdefault(r["monitoring_id"], []).append(r["seq"])
        known = merged.get(r["monitoring_id"])
        if known is not None:
            command = known.model_copy(
                update={
                    "readings": (*known.readings, *command.readings),
                    "silent_since": command.silent_since or known.silent_since,
                    "silence_title": command.silence_title or known.silence_title,
                }
            )
        merged[r["monitoring_id"]] = command
    return Owed([seq for found in seqs.values() for seq in found], list(merged.values()), seqs)


async def drop_owed(conn: Conn, seqs: Sequence[int]) -> None:
    await conn.execute("DELETE FROM signal_outbox WHERE seq = ANY($1::bigint[])", list(seqs))


async def owed_count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM signal_outbox"))


# --- the timers' scans ---------------------------------------------------------------


async def silent_watches(
    conn: Conn, now: datetime, grace: timedelta, limit: int
) -> list[tuple[Watch, datetime]]:
    """Live monitoring plans silent for every_days plus grace whose silence has not been
    signalled yet, with when it began. Each carries, as its sensitivity, the tags every
    monitoring plan of its patient's measure lends the readings (the task a silence opens
    goes on to quote them)."""
    rows = await conn.fetch(
        f"""
        SELECT * FROM (
            SELECT {", ".join("w." + c for c in WATCH_COLUMNS.split(", "))},
                   greatest(w.started_at, coalesce(p.active_since, w.started_at),
                            coalesce(r.latest_at, w.started_at)) AS since,
                   ARRAY(SELECT DISTINCT t FROM signal_watches o, unnest(o.sensitivity) t
                         WHERE o.patient_id = w.patient_id
                           AND o.measure_code = w.measure_code) AS lent
            FROM signal_watches w
            JOIN signal_plans p ON p.plan_id = w.plan_id AND p.status = 'ACTIVE'
            LEFT JOIN signal_readings r
                   ON r.patient_id = w.patient_id AND r.measure_code = w.measure_code
            WHERE w.active
        ) AS silent
        WHERE $1 > since + make_interval(days => every_days) + $2
          AND (silence_signalled IS NULL OR silence_signalled < since)
        ORDER BY since LIMIT $3
        """,  # noqa: S608 - constant column list
        now,
        grace,
        limit,
    )
    found = []
    for r in rows:
        watch = _watch(r)
        tags = {*watch.sensitivity, *(Sensitivity(t) for t in r["lent"])}
        found.append(
            (replace(watch, sensitivity=tuple(t for t in Sensitivity if t in tags)), r["since"])
        )
    return found


async def escalation_due(conn: Conn, urgent_before: datetime, limit: int) -> list[Task]:
    """Urgent tasks still in TODO, urgent since before `urgent_before`, not escalated."""
    rows = await conn.fetch(
        f"""
        SELECT {TASK_COLUMNS} FROM board_tasks
        WHERE urgent_since IS NOT NULL AND status = 'TODO' AND escalated_at IS NULL
          AND urgent_since < $1
        ORDER BY urgent_since LIMIT $2
        """,  # noqa: S608 - constant column list
        urgent_before,
        limit,
    )
    return [task_from_row(r) for r in rows]


# --- the API's queries ---------------------------------------------------------------


async def of_plans(conn: Conn, plan_ids: Sequence[str]) -> Signals:
    """The records of these care plans (their watches and goals, the plans' states, and the
    latest readings of their patients)."""
    if not plan_ids:
        return Signals()
    found = await _fetch(conn, "plan_id = ANY($1::text[])", list(plan_ids), readings=False)
    patients = {p.patient_id for p in found.plans.values()}
    if patients:
        rows = await conn.fetch(
            f"SELECT {LATEST_COLUMNS} FROM signal_readings WHERE patient_id = ANY($1::text[])",  # noqa: S608 - constant column list
            list(patients),
        )
        found.latest = {(r["patient_id"], r["measure_code"]): _latest(r) for r in rows}
    return found


async def of_team(conn: Conn, team_id: str) -> Signals:
    """The team's records: its plans, watches, goals and latest readings."""
    return await _fetch(conn, "team_id = $1", team_id)


async def of_patient(conn: Conn, patient_id: str) -> Signals:
    return await load(conn, frozenset({patient_id}))


async def signal_tasks(conn: Conn, team_id: str) -> list[Task]:
    """The team's open signal tasks: urgent first, then the oldest."""
    rows = await conn.fetch(
        f"""
        SELECT {TASK_COLUMNS} FROM board_tasks
        WHERE team_id = $1 AND source = 'signal' AND status = ANY($2::text[])
        ORDER BY urgent_since NULLS LAST, created_at, task_id
        """,  # noqa: S608 - constant column list
        team_id,
        [TaskStatus.TODO.value, TaskStatus.IN_PROGRESS.value, TaskStatus.BLOCKED.value],
    )
    return [task_from_row(r) for r in rows]
