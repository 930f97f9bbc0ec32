"""Dropping the board read models and rebuilding them from the event store, and checking
the live boards against such a rebuild (made in temporary tables, then thrown away)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.common import dates, projection
from services.common.db import Conn
from services.common.event_store import EventStore
from services.common.projection import Positioned
from services.tasks.store import (
    BOARD_LOCK,
    HUDDLE_COLUMNS,
    OPEN_STATUSES,
    PLAN_COLUMNS,
    TASK_COLUMNS,
    BoardProjection,
)

# The tables a rebuild writes, each with its key and the columns that must match.
_TABLES = {
    "board_tasks": ("task_id", TASK_COLUMNS),
    "board_plans": ("plan_id", PLAN_COLUMNS),
    "board_huddles": ("huddle_id", HUDDLE_COLUMNS),
}
_BATCH = 2000
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
    """Replace the boards with what the event store says, in one transaction. Workers'
    batches wait for it, then apply only what it did not; readers see the old boards
    until it commits. Subscribers hear of the events the workers had not applied yet,
    and of nothing else again."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BOARD_LOCK)
        heard = await projection.forget(conn, BoardProjection.name)
        for table in _TABLES:
            # DELETE, not TRUNCATE: TRUNCATE would lock readers out until the commit.
            await conn.execute(f"DELETE FROM {table}")  # noqa: S608 - constant table names
        result = await _refill(
            conn,
            EventStore(pool),
            keep=lambda _team, _position: True,
            notify=lambda team, position: position > heard.get(team, 0),
        )
        await projection.record(conn, BoardProjection.name, result.positions)
        # Subscribers heard of these when they became overdue; do not tell them again.
        await conn.execute(
            "UPDATE board_tasks SET overdue_announced = true "
            "WHERE status = ANY($1::text[]) AND due_date < $2",
            OPEN_STATUSES,
            dates.earliest_today(datetime.now(UTC)),
        )
        return result.rebuilt


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
    reached = await projection.positions(conn, BoardProjection.name)
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
        keep=lambda team, p: p <= reached.get(team, 0),
        notify=lambda _team, _position: False,
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
    behind = await projection.unapplied(conn, BoardProjection.name)
    return Checked(rebuilt=result.rebuilt, differences=differences, behind=behind)


@dataclass
class _Refill:
    rebuilt: Rebuilt
    positions: dict[str, int]


async def _refill(
    conn: Conn,
    store: EventStore,
    *,
    keep: Callable[[str, int], bool],
    notify: Callable[[str, int], bool],
) -> _Refill:
    """Apply the store's events (those `keep` accepts) to the boards on `conn`, in batches,
    queueing the notices of those `notify` accepts; an event the projector refuses is
    skipped and listed, as the worker would dead-letter it."""
    board = BoardProjection(notify=notify)
    started = time.perf_counter()
    rebuilt = Rebuilt()
    positions: dict[str, int] = {}
    after = 0
    while batch := await store.read_all(after, _BATCH):
        after = batch[-1].position
        rebuilt.events += len(batch)
        items = [
            Positioned(r.position, r.envelope)
            for r in batch
            if keep(r.envelope.team_id, r.position)
        ]
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes only this batch
                await board.apply(conn, items)
            applied = items
        except Exception:
            applied = []
            for item in items:
                try:
                    async with conn.transaction():
                        await board.apply(conn, [item])
                    applied.append(item)
                except Exception as exc:
                    rebuilt.refused.append((item.position, f"{type(exc).__name__}: {exc}"))
        for item in items:
            team = item.envelope.team_id
            positions[team] = max(positions.get(team, 0), item.position)
        rebuilt.applied += len(applied)
    rebuilt.teams = len(positions)
    rebuilt.seconds = time.perf_counter() - started
    return _Refill(rebuilt, positions)
