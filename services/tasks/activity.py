"""The team-activity read model: how many events changed a team and when it last changed."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.db import Conn
from services.common.projection import Positioned


class TeamActivity:
    name = "team_activity"
    lock: int | None = None

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None:
        """One row per team the batch touched, in one statement: the count of its events
        and the last of them (the batch is in position order)."""
        teams: dict[str, tuple[int, Positioned]] = {}
        for item in batch:
            team = item.envelope.team_id
            teams[team] = (teams.get(team, (0, item))[0] + 1, item)
        await conn.executemany(
            """
            INSERT INTO team_activity
                (team_id, events_applied, last_position, last_event_type, last_event_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (team_id) DO UPDATE SET
                events_applied = team_activity.events_applied + EXCLUDED.events_applied,
                last_position = EXCLUDED.last_position,
                last_event_type = EXCLUDED.last_event_type,
                last_event_at = EXCLUDED.last_event_at
            """,
            [
                (team, count, last.position, last.envelope.type, last.envelope.occurred_at)
                for team, (count, last) in teams.items()
            ],
        )
