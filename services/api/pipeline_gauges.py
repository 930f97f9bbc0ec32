"""What /metrics reads from PostgreSQL at scrape time about the pipeline behind the API:
each read model's position and lag behind the event store, the audit writer's chains, and
the signal and board outboxes. Every query is bounded by indexes: teams and chains are
found by skipping through an index (one probe each), never by reading every row."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.tasks.activity import TeamActivity
from services.tasks.monitoring_store import SignalsProjection
from services.tasks.store import BoardProjection

# The read models the worker keeps (services.tasks.agents.default_projections): the only
# label values of the projection gauges.
PROJECTIONS = (BoardProjection.name, TeamActivity.name, SignalsProjection.name)


@dataclass(frozen=True, slots=True)
class ProjectionLag:
    projection: str
    position: int  # the highest store position applied, over teams (0: none)
    unapplied: int  # events in the store the projection has not applied yet


@dataclass(frozen=True, slots=True)
class ChainState:
    chain: int
    last_append_seconds: float  # since the chain's newest entry was written
    checkpoint_seconds: float  # age of the chain's newest signed checkpoint (inf: none)
    unsigned: int  # entries after the newest checkpoint


@dataclass(frozen=True, slots=True)
class Queue:
    rows: int
    oldest_seconds: float  # 0 when empty


# The teams with events, one index probe each (events_team_position), then per projection
# and team the events past its position, counted on the same index.
_PROJECTION_LAG = """
WITH RECURSIVE teams AS (
    (SELECT team_id FROM events ORDER BY team_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.team_id FROM events e WHERE e.team_id > t.team_id
            ORDER BY e.team_id LIMIT 1)
    FROM teams t WHERE t.team_id IS NOT NULL
)
SELECT names.projection,
       coalesce((SELECT max(p.position) FROM projection_positions p
                 WHERE p.projection = names.projection), 0) AS position,
       coalesce(sum((SELECT count(*) FROM events e
                     WHERE e.team_id = teams.team_id
                       AND e.position > coalesce(pp.position, 0))), 0) AS unapplied
FROM unnest($1::text[]) AS names(projection)
LEFT JOIN teams ON teams.team_id IS NOT NULL
LEFT JOIN projection_positions pp
       ON pp.projection = names.projection AND pp.team_id = teams.team_id
GROUP BY names.projection
"""

# The chains of the audit log, one probe each (audit_entries_chain), with each one's newest
# entry and newest checkpoint.
_AUDIT_CHAINS = """
WITH RECURSIVE chains AS (
    (SELECT chain FROM audit_entries ORDER BY chain LIMIT 1)
    UNION ALL
    SELECT (SELECT a.chain FROM audit_entries a WHERE a.chain > c.chain
            ORDER BY a.chain LIMIT 1)
    FROM chains c WHERE c.chain IS NOT NULL
)
SELECT c.chain,
       extract(epoch FROM now() - head.written_at)::float8 AS appended,
       extract(epoch FROM now() - cp.signed_at)::float8 AS signed,
       head.seq - coalesce(cp.seq, 0) AS unsigned
FROM chains c
CROSS JOIN LATERAL (SELECT a.seq, a.written_at FROM audit_entries a
                    WHERE a.chain = c.chain ORDER BY a.seq DESC LIMIT 1) head
LEFT JOIN LATERAL (SELECT k.seq, k.signed_at FROM audit_checkpoints k
                   WHERE k.chain = c.chain ORDER BY k.seq DESC LIMIT 1) cp ON true
WHERE c.chain IS NOT NULL
ORDER BY c.chain
"""

_QUEUE = """
SELECT count(*) AS n,
       coalesce(greatest(0, extract(epoch FROM now() - min({column}))), 0)::float8 AS oldest
FROM {table}
"""
_SIGNAL_OUTBOX = _QUEUE.format(table="signal_outbox", column="queued_at")
_BOARD_OUTBOX = _QUEUE.format(table="board_outbox", column="created_at")


async def projection_lags(pool: asyncpg.Pool[Any]) -> list[ProjectionLag]:
    rows = await pool.fetch(_PROJECTION_LAG, list(PROJECTIONS))
    return [ProjectionLag(r["projection"], int(r["position"]), int(r["unapplied"])) for r in rows]


async def audit_chains(pool: asyncpg.Pool[Any]) -> list[ChainState]:
    rows = await pool.fetch(_AUDIT_CHAINS)
    return [
        ChainState(
            chain=r["chain"],
            last_append_seconds=max(0.0, r["appended"]),
            # A clock stepped back shows 0, never a negative age.
            checkpoint_seconds=math.inf if r["signed"] is None else max(0.0, r["signed"]),
            unsigned=int(r["unsigned"]),
        )
        for r in rows
    ]


async def signal_outbox(pool: asyncpg.Pool[Any]) -> Queue:
    row = await pool.fetchrow(_SIGNAL_OUTBOX)
    assert row is not None
    return Queue(int(row["n"]), float(row["oldest"]))


async def board_outbox(pool: asyncpg.Pool[Any]) -> Queue:
    row = await pool.fetchrow(_BOARD_OUTBOX)
    assert row is not None
    return Queue(int(row["n"]), float(row["oldest"]))
