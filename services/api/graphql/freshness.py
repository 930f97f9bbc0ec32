"""Read-your-writes: a read given `atLeast: <position>` (a position a mutation's answer
carried in `extensions.position`) answers only once its read models have applied every
event of the team up to that position, waiting a bounded time for them.

The event store's positions are gap-free in commit order, so a committed position names
exactly the events before it. A read model (a projection) tracks the highest position it
applied per team; it has caught up with a position when that is at or past it, or when
the team has no event between the two (positions are global: another team's events do
not hold a board back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.api.graphql.context import Context
from services.common.db import Conn
from services.common.errors import InvalidInput, Unavailable

BOARD = "board"
SIGNALS = "signals"
# Lists read from the event store itself wait for no read model: a committed position is
# in them already.
EVENT_STORE: tuple[str, ...] = ()
# The first re-check comes this soon; the pause doubles up to the last (a team's update
# through the hub wakes the waiter earlier).
_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.05

_BEHIND = """
SELECT (SELECT coalesce(max(position), 0) FROM events) AS head,
       (SELECT min(coalesce(pp.position, 0))
          FROM unnest($2::text[]) AS wanted(projection)
          LEFT JOIN projection_positions pp
                 ON pp.projection = wanted.projection AND pp.team_id = $1
         WHERE EXISTS (SELECT 1 FROM events e
                        WHERE e.team_id = $1
                          AND e.position > coalesce(pp.position, 0)
                          AND e.position <= $3)) AS behind_at
"""


def ahead(argument: str, position: int) -> InvalidInput:
    """The refusal of a position past the last one committed. It does not name the head:
    positions are global, so it would tell every team's activity to a caller of any one."""
    return InvalidInput(
        f"{argument} {position} is past the last position committed: pass a position an "
        "answer gave you."
    )


async def caught_up(
    ctx: Context, team_id: str, at_least: int | None, projections: Sequence[str]
) -> None:
    """Return once the team's `projections` have applied every event up to `at_least`
    (at once when it is None). BAD_USER_INPUT for a position the store has not reached;
    SERVICE_UNAVAILABLE when the read models are still behind after the wait."""
    if at_least is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.settings.read_wait_seconds
    pause = _FIRST_PAUSE
    while True:
        async with ctx.database.acquire() as conn:
            row = await conn.fetchrow(_BEHIND, team_id, list(projections), at_least)
        assert row is not None
        if at_least > row["head"]:
            raise ahead("atLeast", at_least)
        behind_at = row["behind_at"]
        if behind_at is None:
            return
        left = deadline - loop.time()
        if left <= 0:
            raise Unavailable(
                f"The team's read models have not applied position {at_least} yet (they "
                f"are at {behind_at}); try again in a moment.",
                extensions={"atLeast": str(at_least), "position": str(behind_at)},
            )
        if ctx.hub is not None:
            await ctx.hub.moved(team_id, min(pause, left))
        else:
            await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, _LONGEST_PAUSE)


async def position_of(conn: Conn, team_id: str, projections: Sequence[str]) -> int:
    """The position the team's read models reflect together: every event of the team up
    to it applied by each of them (0: none yet). Read it in the snapshot the read models
    are read in."""
    value = await conn.fetchval(
        "SELECT min(coalesce(pp.position, 0)) FROM unnest($2::text[]) AS wanted(projection) "
        "LEFT JOIN projection_positions pp "
        "ON pp.projection = wanted.projection AND pp.team_id = $1",
        team_id,
        list(projections),
    )
    return int(value or 0)
