"""Dropping the read models (the boards, and the care-signals model) and rebuilding them
from the event store, and checking the live ones against such a rebuild (made in temporary
tables, then thrown away)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.common import dates, projection
from services.common.db import Conn
from services.common.event_store import EventStore
from services.common.projection import Positioned, Projection
from services.tasks import monitoring_store
from services.tasks.monitoring_store import SIGNALS_LOCK, SignalsProjection
from services.tasks.store import (
    BOARD_LOCK,
    HUDDLE_COLUMNS,
    OPEN_STATUSES,
    PLAN_COLUMNS,
    TASK_COLUMNS,
    BoardProjection,
)


@dataclass(frozen=True)
class _Target:
    """A projection a rebuild remakes: its lock, its tables (each with its key and the
    columns that must match) and how to make it, given which events it should tell of
    (the boards' notices, the signals owed to the write side) and whether its tables held
    nothing when the refill began (so what it writes is all they hold)."""

    name: str
    lock: int
    tables: dict[str, tuple[str, str]]
    make: Callable[[Callable[[str, int], bool], bool], Projection]


_TARGETS = (
    _Target(
        BoardProjection.name,
        BOARD_LOCK,
        {
            "board_tasks": ("task_id", TASK_COLUMNS),
            "board_plans": ("plan_id", PLAN_COLUMNS),
            "board_huddles": ("huddle_id", HUDDLE_COLUMNS),
        },
        lambda tell, empty: BoardProjection(notify=tell, remember=empty),
    ),
    _Target(
        SignalsProjection.name,
        SIGNALS_LOCK,
        monitoring_store.TABLES,
        lambda tell, _empty: SignalsProjection(emit=tell),
    ),
)
_TABLES = {table: spec for target in _TARGETS for table, spec in target.tables.items()}
_BATCH = 2000
# The cycle collector's thresholds while a refill runs (gc.set_threshold). A refill makes
# a few hundred objects an event, nearly all freed by reference counting as it goes; at
# Python's defaults (700, 10, 10) the collector still ran every few events and walked the
# records kept meanwhile: about 30% of a rebuild's CPU (measured).
_COLLECT_AFTER = (50_000, 50, 1000)
# Differences listed by id, per table; the count is always complete.
_SHOWN = 20


@dataclass
class Rebuilt:
    events: int = 0
    applied: int = 0
    teams: int = 0
    seconds: float = 0.0
    # (position, why) of events the projector refused, as the worker dead-letters them.
    refused: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Checked:
    rebuilt: Rebuilt
    # table -> (how many rows differ, the first ids)
    differences: dict[str, tuple[int, list[str]]]
    # Events in the store past what the live boards have applied (not compared).
    behind: int

    @property
    def ok(self) -> bool:
        return not self.differences


async def rebuild(pool: asyncpg.Pool[Any]) -> Rebuilt:
    """Replace the boards and the signals model with what the event store says, in one
    transaction. Workers' batches wait for it, then apply only what it did not; readers
    see the old models until it commits. Subscribers hear of (and the write side is sent
    the signals of) the events the workers had not applied yet, and of nothing else again."""
    async with pool.acquire() as conn, conn.transaction():
        heard: dict[str, dict[str, int]] = {}
        for target in _TARGETS:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", target.lock)
            heard[target.name] = await projection.forget(conn, target.name)
        for table in _TABLES:
            # DELETE, not TRUNCATE: TRUNCATE would lock readers out until the commit.
            await conn.execute(f"DELETE FROM {table}")  # noqa: S608 - constant table names
        everything = _past({})
        result = await _refill(
            conn,
            EventStore(pool),
            keep=dict.fromkeys((t.name for t in _TARGETS), everything),
            tell={t.name: _past(heard[t.name]) for t in _TARGETS},
            empty=True,
        )
        for target in _TARGETS:
            await projection.record(conn, target.name, result.positions)
        # Subscribers heard of these when they became overdue; do not tell them again.
        await conn.execute(
            "UPDATE board_tasks SET overdue_announced = true "
            "WHERE status = ANY($1::text[]) AND due_date < $2",
            OPEN_STATUSES,
            dates.earliest_today(datetime.now(UTC)),
        )
        return result.rebuilt


async def adopt(pool: asyncpg.Pool[Any]) -> list[str]:
    """Fill each read model a migration added to a running system (no position recorded
    for it, while the boards have some) from the store, telling nobody: history is not
    news, so no subscriber hears of it and no old reading becomes a signal. Workers run it
    at start; the first one fills, the others find positions and do nothing. Returns the
    names of the read models filled."""
    async with pool.acquire() as conn, conn.transaction():
        for target in _TARGETS:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", target.lock)
        known = {
            r["projection"]
            for r in await conn.fetch("SELECT DISTINCT projection FROM projection_positions")
        }
        if _TARGETS[0].name not in known:
            return []  # a new system: the workers fill every read model as events come
        new = [t for t in _TARGETS if t.name not in known]
        if not new:
            return []
        everything = _past({})
        result = await _refill(
            conn,
            EventStore(pool),
            keep=dict.fromkeys((t.name for t in new), everything),
            tell={t.name: _never for t in new},
            empty=False,  # a migration's new tables, but nothing here says they are empty
        )
        for target in new:
            await projection.record(conn, target.name, result.positions)
        return [t.name for t in new]


def _never(_team: str, _position: int) -> bool:
    return False


async def check(pool: asyncpg.Pool[Any]) -> Checked:
    """Rebuild into temporary tables, up to the position each team's live board reached,
    and list the rows where the two differ. Changes nothing."""
    async with pool.acquire() as conn:
        tx = conn.transaction(isolation="repeatable_read")
        await tx.start()
        try:
            return await _check(conn, EventStore(pool))
        finally:
            await tx.rollback()  # the temporary tables go with it


async def _check(conn: Conn, store: EventStore) -> Checked:
    live = await conn.fetchval("SELECT current_schema()")
    reached = {t.name: await projection.positions(conn, t.name) for t in _TARGETS}
    # Temporary tables, not a schema of its own: the services' role may create no schema
    # (it owns nothing), and these vanish with the session's transaction anyway.
    scratch = "pg_temp"
    for table in _TABLES:
        await conn.execute(
            f'CREATE TEMP TABLE {table} (LIKE "{live}".{table} INCLUDING ALL) ON COMMIT DROP'
        )
    await conn.execute(f'SET LOCAL search_path TO pg_temp, "{live}"')
    result = await _refill(
        conn,
        store,
        keep={t.name: _upto(reached[t.name]) for t in _TARGETS},
        tell={t.name: _never for t in _TARGETS},
        empty=True,
    )
    differences = {}
    for table, (key, columns) in _TABLES.items():
        a, b = f'"{live}".{table}', f'"{scratch}".{table}'
        ids = await conn.fetch(
            f"""
            SELECT {key} AS id FROM (
                (SELECT {columns} FROM {a} EXCEPT SELECT {columns} FROM {b})
                UNION ALL
                (SELECT {columns} FROM {b} EXCEPT SELECT {columns} FROM {a})
            ) AS differing GROUP BY {key} ORDER BY {key}
            """  # noqa: S608 - table and column names are constants; the schema is generated
        )
        if ids:
            differences[table] = (len(ids), [r["id"] for r in ids[:_SHOWN]])
    behind = max([await projection.unapplied(conn, t.name) for t in _TARGETS])
    return Checked(rebuilt=result.rebuilt, differences=differences, behind=behind)


def _past(heard: dict[str, int]) -> Callable[[str, int], bool]:
    """Events past the position each team had reached."""
    return lambda team, position: position > heard.get(team, 0)


def _upto(reached: dict[str, int]) -> Callable[[str, int], bool]:
    """Events up to the position each team had reached."""
    return lambda team, position: position <= reached.get(team, 0)


class _RareCollection:
    """Cycles looked for no more often than _COLLECT_AFTER says while any refill of the
    process runs; the process's own thresholds again when the last one ends."""

    def __init__(self) -> None:
        self.running = 0
        self.before = gc.get_threshold()

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        if self.running == 0:
            self.before = gc.get_threshold()
            pairs = zip(_COLLECT_AFTER, self.before, strict=True)
            gc.set_threshold(*(max(ours, theirs) for ours, theirs in pairs))
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0:
                gc.set_threshold(*self.before)


_rarely = _RareCollection()


@dataclass
class _Refill:
    rebuilt: Rebuilt
    positions: dict[str, int]


async def _refill(
    conn: Conn,
    store: EventStore,
    *,
    keep: dict[str, Callable[[str, int], bool]],
    tell: dict[str, Callable[[str, int], bool]],
    empty: bool,
) -> _Refill:
    """Apply the store's events to each target on `conn` (those its `keep` accepts), in
    batches, telling of those its `tell` accepts; an event a projector refuses is skipped
    and listed, as the worker would dead-letter it. Only the targets `keep` names are
    filled; counts and positions are the first one's (the boards', in a whole rebuild).
    `empty`: the targets' tables held nothing when this began."""
    with _rarely.during():
        made = [(t, t.make(tell[t.name], empty)) for t in _TARGETS if t.name in keep]
        started = time.perf_counter()
        rebuilt = Rebuilt()
        positions: dict[str, int] = {}
        batch = await store.read_all(0, _BATCH)
        while batch:
            # The next batch is read and decoded while this one is applied: the read
            # waits on a connection of the pool while the apply waits on this one.
            following = asyncio.ensure_future(store.read_all(batch[-1].position, _BATCH))
            try:
                rebuilt.events += len(batch)
                # Targets kept alike (the same `keep` function) share one list of the
                # batch's.
                chosen: dict[Callable[[str, int], bool], list[Positioned]] = {}
                for target, made_projection in made:
                    accepts = keep[target.name]
                    if accepts not in chosen:
                        chosen[accepts] = [
                            Positioned(r.position, r.envelope)
                            for r in batch
                            if accepts(r.envelope.team_id, r.position)
                        ]
                    items = chosen[accepts]
                    applied = await _apply(
                        conn, made_projection, items, rebuilt.refused, target.name
                    )
                    if target is made[0][0]:
                        for item in items:
                            team = item.envelope.team_id
                            positions[team] = max(positions.get(team, 0), item.position)
                        rebuilt.applied += applied
            except BaseException:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await following
                raise
            batch = await following
        rebuilt.teams = len(positions)
        rebuilt.seconds = time.perf_counter() - started
        return _Refill(rebuilt, positions)


async def _apply(
    conn: Conn,
    target: Projection,
    items: list[Positioned],
    refused: list[tuple[int, str]],
    name: str,
) -> int:
    """Apply items in a savepoint (a refusal undoes only this batch), then one by one if
    one was refused; returns how many were applied."""
    try:
        async with conn.transaction():
            await target.apply(conn, items)
        return len(items)
    except Exception:
        applied = 0
        prefix = "" if name == BoardProjection.name else f"{name}: "
        for item in items:
            try:
                async with conn.transaction():
                    await target.apply(conn, [item])
                applied += 1
            except Exception as exc:
                refused.append((item.position, f"{prefix}{type(exc).__name__}: {exc}"))
        return applied
