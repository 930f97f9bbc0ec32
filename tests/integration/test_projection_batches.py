"""Every read model applies a batch in one transaction (apply_batches), on a real
database: each skips what it applied before, and one that fails leaves the others'
changes and positions unwritten."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from services.common.db import Conn
from services.common.projection import Positioned, apply_batches, positions
from services.tasks.activity import TeamActivity
from services.tasks.agents import default_projections
from tests.integration.goals import goals_appended


async def _positions(pool: asyncpg.Pool[Any], name: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        return await positions(conn, name)


async def test_one_batch_lands_in_every_read_model_once(pool: asyncpg.Pool[Any]) -> None:
    first = await goals_appended(pool, "team-a", 3)
    other = await goals_appended(pool, "team-b", 2)
    projections = default_projections()

    applied = await apply_batches(pool, projections, first + other)
    again = await apply_batches(pool, projections, first + other)  # redelivered

    assert applied == {p.name: 5 for p in projections}
    assert again == {p.name: 0 for p in projections}
    for p in projections:
        assert await _positions(pool, p.name) == {
            "team-a": first[-1].position,
            "team-b": other[-1].position,
        }


class _Broken:
    name = "broken"
    lock: int | None = None

    async def apply(self, conn: Conn, batch: Sequence[Positioned]) -> None:
        raise RuntimeError("cannot apply")


async def test_a_read_model_that_fails_leaves_the_others_unwritten(
    pool: asyncpg.Pool[Any],
) -> None:
    batch = await goals_appended(pool, "team-c", 2)

    with pytest.raises(RuntimeError, match="cannot apply"):
        await apply_batches(pool, [TeamActivity(), _Broken()], batch)

    assert await _positions(pool, TeamActivity.name) == {}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM team_activity") == 0
    assert await apply_batches(pool, [TeamActivity()], batch) == {TeamActivity.name: 2}
