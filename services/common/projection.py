"""Applying events from care.events to read models exactly once in effect, and sorting out
the messages that cannot be applied (they go to the dead-letter topic)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from schemas import codec
from schemas.envelope import Envelope
from services.common import db
from services.common.db import Conn
from services.common.kafka import POSITION_HEADER

# What a pool hands out: a proxy that behaves as a connection.

ERROR_HEADER = "carecoord-error"
SOURCE_HEADER = "carecoord-source"


@dataclass(frozen=True, slots=True)
class Positioned:
    position: int
    envelope: Envelope


class Projection(Protocol):
    """A read model fed by events; apply runs inside the caller's transaction and gets the
    batch's events not applied yet, in order. `lock`, when not None, is an advisory lock
    each batch takes shared first (a rebuild takes it exclusively)."""

    name: str
    lock: int | None

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None: ...


class PoisonMessage(Exception):
    """A message that can never be applied: it belongs on the dead-letter topic."""


def parse(value: bytes | None, headers: Mapping[str, bytes]) -> Positioned:
    """The event and its store position, or PoisonMessage saying what is wrong."""
    raw = headers.get(POSITION_HEADER)
    if raw is None:
        raise PoisonMessage(f"no {POSITION_HEADER} header")
    try:
        position = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise PoisonMessage(f"{POSITION_HEADER} header is not an integer") from None
    if position < 1:
        raise PoisonMessage(f"{POSITION_HEADER} header must be positive")
    try:
        envelope = codec.decode(value or b"")
    except codec.CodecError as exc:
        raise PoisonMessage(f"{type(exc).__name__}: {exc}") from exc
    return Positioned(position, envelope)


_LOCK = (
    "SELECT projection, team_id, position FROM projection_positions "
    "WHERE projection = ANY($1::text[]) AND team_id = ANY($2::text[]) "
    "ORDER BY projection, team_id FOR UPDATE"
)
_MAKE = (
    "WITH made AS ("
    " INSERT INTO projection_positions (projection, team_id, position)"
    " SELECT p, t, 0 FROM unnest($1::text[]) AS p, unnest($2::text[]) AS t"
    " ON CONFLICT DO NOTHING RETURNING projection, team_id, position)"
    " SELECT projection, team_id, position FROM made"
)
# The positions of the batch's teams, each row made (at 0) if missing, or locked (_LOCK):
# one round trip. The SELECT does not see the rows the INSERT makes (one snapshot), so the
# two parts never name a row twice.
_MAKE_AND_LOCK = f"{_MAKE} UNION ALL SELECT * FROM ({_LOCK}) AS held"  # noqa: S608 - constants


async def apply_batch(
    pool: asyncpg.Pool[Any], projection: Projection, batch: Sequence[Positioned]
) -> int:
    """Apply a batch in one transaction, skipping what this projection already applied
    for each team; return how many events were applied."""
    return (await apply_batches(pool, [projection], batch))[projection.name]


async def apply_batches(
    pool: asyncpg.Pool[Any], projections: Sequence[Projection], batch: Sequence[Positioned]
) -> dict[str, int]:
    """Apply a batch to each projection, all in one transaction, each skipping what it
    already applied for each team; how many events each applied, by name. Their locks are
    taken shared in ascending order, the order a rebuild takes them exclusively."""
    applied = {p.name: 0 for p in projections}
    if not batch or not projections:
        return applied
    teams = sorted({item.envelope.team_id for item in batch})
    names = [p.name for p in projections]
    # The locks go with BEGIN (one message), in ascending order.
    locks = sorted({p.lock for p in projections if p.lock is not None})
    async with pool.acquire() as conn, db.transaction(conn, shared_locks=locks):
        # A row for every team first, so that FOR UPDATE has something to lock even for a
        # team's first events (two workers overlapping in a rebalance then queue); the rows
        # made here are this transaction's until it ends, the others are locked.
        rows = await conn.fetch(_MAKE_AND_LOCK, names, teams)
        if len(rows) < len(names) * len(teams):
            # A row another worker made after this statement's snapshot was taken (its
            # INSERT found it, its SELECT could not see it): read them all again, locked.
            rows = await conn.fetch(_LOCK, names, teams)
        done = {(r["projection"], r["team_id"]): r["position"] for r in rows}
        reached: tuple[list[str], list[str], list[int]] = ([], [], [])
        for projection in projections:
            name = projection.name
            moved: dict[str, int] = {}
            fresh: list[Positioned] = []
            for item in batch:
                team = item.envelope.team_id
                if item.position <= moved.get(team, done.get((name, team), 0)):
                    continue
                fresh.append(item)
                moved[team] = item.position
            if fresh:
                await projection.apply(conn, fresh)
                applied[name] = len(fresh)
                for team, position in moved.items():
                    reached[0].append(name)
                    reached[1].append(team)
                    reached[2].append(position)
        if reached[0]:
            await conn.execute(
                """
                INSERT INTO projection_positions (projection, team_id, position, updated_at)
                SELECT p, t, n, now() FROM unnest($1::text[], $2::text[], $3::bigint[])
                    AS r(p, t, n)
                ON CONFLICT (projection, team_id)
                DO UPDATE SET position = GREATEST(projection_positions.position,
                                                  EXCLUDED.position),
                              updated_at = now()
                """,
                *reached,
            )
    return applied


async def position(conn: Conn, projection: str, team_id: str) -> int:
    """The highest event-store position the projection applied for the team (0: none)."""
    value = await conn.fetchval(
        "SELECT position FROM projection_positions WHERE projection = $1 AND team_id = $2",
        projection,
        team_id,
    )
    return int(value or 0)


async def positions(conn: Conn, projection: str) -> dict[str, int]:
    """The position the projection applied, per team."""
    rows = await conn.fetch(
        "SELECT team_id, position FROM projection_positions WHERE projection = $1", projection
    )
    return {r["team_id"]: r["position"] for r in rows}


async def forget(conn: Conn, projection: str) -> dict[str, int]:
    """Drop the projection's positions (for a rebuild), returning what they were."""
    rows = await conn.fetch(
        "DELETE FROM projection_positions WHERE projection = $1 RETURNING team_id, position",
        projection,
    )
    return {r["team_id"]: r["position"] for r in rows}


async def record(conn: Conn, projection: str, reached: Mapping[str, int]) -> None:
    """Set the positions of a projection whose rows were just forgotten (a rebuild)."""
    await conn.executemany(
        "INSERT INTO projection_positions (projection, team_id, position) VALUES ($1, $2, $3)",
        [(projection, team, p) for team, p in reached.items()],
    )


async def unapplied(conn: Conn, projection: str) -> int:
    """How many events in the store the projection has not applied yet (as of the
    caller's snapshot)."""
    count = await conn.fetchval(
        "SELECT count(*) FROM events e WHERE e.position > coalesce("
        "(SELECT p.position FROM projection_positions p "
        " WHERE p.projection = $1 AND p.team_id = e.team_id), 0)",
        projection,
    )
    return int(count)
