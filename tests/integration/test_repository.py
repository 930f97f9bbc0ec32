"""A repository that keeps recent aggregates still answers with the latest version."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from schemas.common import Discipline, TaskStatus
from schemas.team import RoleAssigned, TeamCreated
from services.common.aggregates import Loaded, Repository
from services.common.event_store import EventStore, NewEvent
from services.plans.domain.team import TEAM
from services.tasks.domain import TASK
from tests.factories import task_created, task_moved


def team_created(team_id: str) -> NewEvent:
    created = TeamCreated(team_id=team_id, name="Renal", lead_user_id="u-1", lead_name="Dr One")
    return NewEvent(event=created, team_id=team_id, actor_id="u-1")


def role_assigned(team_id: str, user_id: str) -> NewEvent:
    assigned = RoleAssigned(
        team_id=team_id, user_id=user_id, name="Nurse Nine", discipline=Discipline.NURSE, lead=False
    )
    return NewEvent(event=assigned, team_id=team_id, actor_id="u-1")


class CountingStore(EventStore):
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        super().__init__(pool)
        self.reads: list[tuple[str, int]] = []

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> Any:
        self.reads.append((stream_id, after_version))
        return await super().read_stream(stream_id, after_version=after_version)

    async def read_streams_after(self, after: Mapping[str, int]) -> Any:
        self.reads.append(tuple(after.items()))  # type: ignore[arg-type]
        return await super().read_streams_after(after)


async def test_a_kept_aggregate_reads_only_what_was_written_since_even_by_another_process(
    pool: asyncpg.Pool[Any],
) -> None:
    task_id = str(uuid.uuid4())
    stream = TASK.stream_id(task_id)
    other = EventStore(pool)  # another API replica writing the same store
    await other.append(stream, 0, [task_created(task_id, team_id="team-r")])
    store = CountingStore(pool)
    repository = Repository(store, remember=2)

    first = await repository.load(TASK, task_id)
    await other.append(
        stream,
        1,
        [task_moved(task_id, team_id="team-r", status=TaskStatus.DONE, previous=TaskStatus.TODO)],
    )
    second = await repository.load(TASK, task_id)

    assert store.reads == [(stream, 0), (stream, 1)]
    assert first.version == 1 and first.state is not None
    assert first.state.status is TaskStatus.TODO  # what was handed out is not changed later
    assert second.version == 2 and second.state is not None
    assert second.state.status is TaskStatus.DONE
    assert second == await Repository(EventStore(pool)).load(TASK, task_id)


async def test_a_repository_keeps_only_as_many_aggregates_as_it_was_told(
    pool: asyncpg.Pool[Any],
) -> None:
    store = CountingStore(pool)
    repository = Repository(store, remember=2)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in ids:
        await store.append(TASK.stream_id(task_id), 0, [task_created(task_id, team_id="team-r")])
        await repository.load(TASK, task_id)
    store.reads.clear()

    for task_id in reversed(ids):
        await repository.load(TASK, task_id)

    # The last two are kept; the first was forgotten when the third came.
    assert [after for _, after in store.reads] == [1, 1, 0]


async def test_a_kept_aggregate_and_its_team_are_read_in_one_query(
    pool: asyncpg.Pool[Any],
) -> None:
    task_id, team_id = str(uuid.uuid4()), str(uuid.uuid4())
    stream, team_stream = TASK.stream_id(task_id), TEAM.stream_id(team_id)
    other = EventStore(pool)
    await other.append(team_stream, 0, [team_created(team_id)])
    await other.append(stream, 0, [task_created(task_id, team_id=team_id)])
    store = CountingStore(pool)
    repository = Repository(store, remember=4)

    first, team = await repository.load_with(TASK, task_id, TEAM, lambda t: t.team_id)
    # Both change behind the repository's back (another replica).
    await other.append(
        stream,
        1,
        [task_moved(task_id, team_id=team_id, status=TaskStatus.DONE, previous=TaskStatus.TODO)],
    )
    await other.append(team_stream, 1, [role_assigned(team_id, "u-9")])
    second, team_now = await repository.load_with(TASK, task_id, TEAM, lambda t: t.team_id)
    alone, none = await repository.load_with(TASK, task_id, TEAM, lambda t: None)

    # Unknown at first: the task, then its team. Known: one query for both.
    assert store.reads == [
        (stream, 0),
        (team_stream, 0),
        ((stream, 1), (team_stream, 1)),
        (stream, 2),
    ]
    assert first.version == 1 and team is not None and team.version == 1
    assert second.version == 2 and second.state is not None
    assert second.state.status is TaskStatus.DONE
    assert team_now is not None and team_now.version == 2
    assert team_now == await Repository(EventStore(pool)).load(TEAM, team_id)
    assert alone == second and none is None
    assert await repository.load_with(TASK, str(uuid.uuid4()), TEAM, lambda t: t.team_id) == (
        Loaded(None, 0),
        None,
    )
