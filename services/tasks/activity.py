"""The team-activity read model: how many events changed a team and when it last changed."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.envelope import Envelope
from services.common.db import Conn
from services.common.projection import Positioned


class TeamActivity:
    name = "team_activity"
    lock: int | None = None

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None:
        for item in batch:
            await self._apply_one(conn, item.envelope, item.position)

    @staticmethod
    async def _apply_one(conn: Conn, envelope: Envelope, position: int) -> None:
        await conn.execute(
            """
            INSERT INTO team_activity
                (team_id, events_applied, last_position, last_event_type, last_event_at)
            VALUES ($1, 1, $2, $3, $4)
            ON CONFLICT (team_id) DO UPDATE SET
                events_applied = team_activity.events_applied + 1,
                last_position = EXCLUDED.last_position,
                last_event_type = EXCLUDED.last_event_type,
                last_event_at = EXCLUDED.last_event_at
            """,
            envelope.team_id,
            position,
            envelope.type,
            envelope.occurred_at,
        )
