"""A repository that keeps recent aggregates still answers with the latest version."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from schemas.common import TaskStatus
from services.common.aggregates import Repository
from services.common.event_store import EventStore
from services.tasks.domain import TASK
from tests.factories import task_created, task_moved


class CountingStore(EventStore):
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        super().__init__(pool)
        self.reads: list[tuple[str, int]] = []

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> Any:
        self.reads.append((stream_id, after_version))
        return await super().read_stream(stream_id, after_version=after_version)


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
