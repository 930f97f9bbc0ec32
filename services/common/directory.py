"""Finding records by who or what they belong to: the teams a user was put on, a team's
patients and its huddles. Each query is one range of an index on the event store
(deploy/migrations/0011_discovery.sql), so its cost follows the size of the answer, not
the number of a team's events; the records themselves are then loaded as aggregates, so
a list is as current as the store.

Lists page by store position (the position of the event that started each record): a
record added later sorts after every one a reader has seen, so a cursor never moves.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.db import Conn

# As the index events_roster_user spells it: the user an event puts on a roster.
_ROSTER_USER = "coalesce(payload->>'user_id', payload->>'lead_user_id')"


@dataclass(frozen=True)
class Found:
    """A record a list names: its id, and the store position that orders it."""

    position: int
    record_id: str


async def teams_of(conn: Conn, user_id: str, *, limit: int) -> list[str]:
    """Ids of the teams the user was ever put on (created, or given a role), in the order
    they joined; whether they are still on each is for its roster to say."""
    rows = await conn.fetch(
        f"""
        SELECT team_id FROM events
        WHERE type IN ('TeamCreated', 'RoleAssigned') AND {_ROSTER_USER} = $1
        GROUP BY team_id ORDER BY min(position) LIMIT $2
        """,  # noqa: S608 - constant expression
        user_id,
        limit,
    )
    return [r["team_id"] for r in rows]


def like_prefix(text: str) -> str:
    """`text` as a LIKE pattern matching itself literally (the caller appends '%')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def team_patients(
    conn: Conn, team_id: str, *, after: int, limit: int, search: str | None = None
) -> list[Found]:
    """The team's patients enrolled after store position `after`, oldest first. `search`
    keeps those whose MRN (without case or spaces) or any word of whose name (without
    case) starts with it."""
    if search is None:
        rows = await conn.fetch(
            """
            SELECT position, payload->>'patient_id' AS record_id FROM events
            WHERE team_id = $1 AND type = 'PatientEnrolled' AND position > $2
            ORDER BY position LIMIT $3
            """,
            team_id,
            after,
            limit,
        )
    else:
        name = like_prefix(search.casefold())
        mrn = like_prefix("".join(search.split()).upper())
        rows = await conn.fetch(
            r"""
            SELECT position, payload->>'patient_id' AS record_id FROM events
            WHERE team_id = $1 AND type = 'PatientEnrolled' AND position > $2
              AND (upper(replace(payload->>'mrn', ' ', '')) LIKE $4 || '%'
                   OR lower(payload->>'name') LIKE $5 || '%'
                   OR lower(payload->>'name') LIKE '% ' || $5 || '%')
            ORDER BY position LIMIT $3
            """,
            team_id,
            after,
            limit,
            mrn,
            name,
        )
    return [Found(r["position"], r["record_id"]) for r in rows]


# A huddle's status as its stream says it: closed, else opened, else scheduled.
_HUDDLE_STATUS = """
    CASE WHEN EXISTS (SELECT 1 FROM events c
                      WHERE c.stream_id = s.stream_id AND c.type = 'HuddleClosed')
         THEN 'CLOSED'
         WHEN EXISTS (SELECT 1 FROM events o
                      WHERE o.stream_id = s.stream_id AND o.type = 'HuddleOpened')
         THEN 'OPEN'
         ELSE 'SCHEDULED' END
"""


async def team_huddles(
    conn: Conn, team_id: str, *, after: int, limit: int, status: str | None = None
) -> list[Found]:
    """The team's huddles scheduled after store position `after`, in the order they were
    scheduled; `status` (SCHEDULED | OPEN | CLOSED) keeps those in it now."""
    rows = await conn.fetch(
        f"""
        SELECT s.position, s.payload->>'huddle_id' AS record_id FROM events s
        WHERE s.team_id = $1 AND s.type = 'HuddleScheduled' AND s.position > $2
          AND ($4::text IS NULL OR {_HUDDLE_STATUS} = $4)
        ORDER BY s.position LIMIT $3
        """,  # noqa: S608 - constant expression
        team_id,
        after,
        limit,
        status,
    )
    return [Found(r["position"], r["record_id"]) for r in rows]
