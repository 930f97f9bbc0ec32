"""Aggregates the repository remembers are held once: loads that overlap (a team's
subscribers reconnecting at once) end with one state between them, not one each."""

from __future__ import annotations

import asyncio

from schemas.envelope import Envelope
from services.common.aggregates import Repository
from services.common.memory_store import InMemoryEventStore
from services.plans.domain.team import TEAM
from services.tasks.write_side import build_handler
from tests.write_side import create_team


class SlowStore(InMemoryEventStore):
    """Reads that give the loop a turn first, so concurrent loads overlap."""

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[Envelope]:
        await asyncio.sleep(0)
        return await super().read_stream(stream_id, after_version=after_version)


async def test_overlapping_loads_of_one_aggregate_share_one_state() -> None:
    store = SlowStore()
    team_id = await create_team(build_handler(store))
    repository = Repository(store, remember=10)

    loads = await asyncio.gather(*(repository.load(TEAM, team_id) for _ in range(10)))

    assert all(loaded.state is not None for loaded in loads)
    assert len({id(loaded.state) for loaded in loads}) == 1


async def test_a_repository_that_remembers_nothing_still_answers_each_load() -> None:
    store = SlowStore()
    team_id = await create_team(build_handler(store))
    repository = Repository(store)

    loads = await asyncio.gather(*(repository.load(TEAM, team_id) for _ in range(3)))

    assert {loaded.version for loaded in loads} == {1}
