"""Goals appended to a plan of their own, as the store records them, for the tests that
feed read models by hand."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.common.event_store import EventStore
from services.common.projection import Positioned
from tests.factories import goal_added


async def goals_appended(pool: asyncpg.Pool[Any], team: str, count: int) -> list[Positioned]:
    """`count` GoalAdded events of one new plan of the team, one append each."""
    store = EventStore(pool)
    plan = f"plan-{uuid.uuid4().hex[:8]}"
    recorded = []
    for n in range(count):
        recorded += await store.append(plan, n, [goal_added(plan, team_id=team)])
    return [Positioned(r.position, r.envelope) for r in recorded]
