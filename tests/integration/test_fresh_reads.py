"""The boards' change log and read-your-writes on a real PostgreSQL: the board projection
logs each change an event made (by its position) in the transaction that applies it, a
prune moves the team's horizon past what it dropped, and a read given `atLeast` waits for
its read model, then answers, or says it is still behind."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from schemas.common import TaskStatus
from services.api.graphql import live
from services.common.errors import StateConflict
from services.common.event_store import EventStore, RecordedEvent, StreamWrite
from services.common.projection import Positioned, apply_batch
from services.settings import Settings
from services.tasks import rebuild, store
from services.tasks.store import BoardProjection
from tests import operations as op
from tests.factories import task_created, task_moved
from tests.graphql import GraphQLErrors, gql
from tests.integration.api import in_process_api, token

LEAD = token("lead-fresh", "Dr Fresh")
BOARD_AT = """query($teamId: ID!, $atLeast: Position) {
  board(teamId: $teamId, atLeast: $atLeast) { position columns { tasks { id } } } }"""


async def _append(pool: asyncpg.Pool[Any], *writes: StreamWrite) -> list[RecordedEvent]:
    recorded = await EventStore(pool).append_many(list(writes))
    return [r for stream in recorded for r in stream]


async def _project(pool: asyncpg.Pool[Any], recorded: list[RecordedEvent]) -> None:
    batch = [Positioned(r.position, r.envelope) for r in recorded]
    await apply_batch(pool, BoardProjection(), batch)


async def test_the_board_logs_each_change_by_position_and_a_resume_reads_those_after_it(
    pool: asyncpg.Pool[Any],
) -> None:
    team, other = f"team-{uuid.uuid4().hex[:8]}", f"team-{uuid.uuid4().hex[:8]}"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    created = await _append(
        pool,
        StreamWrite(f"task-{first}", 0, [task_created(first, team_id=team)]),
        StreamWrite(f"task-{second}", 0, [task_created(second, team_id=other)]),
    )
    moved = await _append(
        pool,
        StreamWrite(
            f"task-{first}",
            1,
            [
                task_moved(
                    first, team_id=team, status=TaskStatus.IN_PROGRESS, previous=TaskStatus.TODO
                )
            ],
        ),
    )
    await _project(pool, created + moved)

    async with pool.acquire() as conn:
        everything = await store.changes_after(conn, team, 0, limit=10)
        after_first = await store.changes_after(conn, team, created[0].position, limit=10)
        capped = await store.changes_after(conn, team, 0, limit=1)

    assert [(u.kind, u.change, u.position) for u in everything.updates] == [
        ("task", "CREATED", created[0].position),
        ("task", "MOVED", moved[0].position),
    ]
    assert [u.task.task_id for u in everything.updates if u.task] == [first, first]
    assert (everything.horizon, everything.more) == (0, False)
    assert [u.position for u in after_first.updates] == [moved[0].position]
    assert (len(capped.updates), capped.more) == (1, True)


async def test_a_prune_drops_old_changes_and_moves_the_teams_horizon_past_them(
    pool: asyncpg.Pool[Any],
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    task = str(uuid.uuid4())
    old = await _append(pool, StreamWrite(f"task-{task}", 0, [task_created(task, team_id=team)]))
    await _project(pool, old)
    async with pool.acquire() as conn:
        # Nothing is old enough yet.
        kept = await store.prune_changes(conn, datetime.now(UTC) - timedelta(hours=1))
        before = await store.changes_after(conn, team, 0, limit=10)
        dropped = await store.prune_changes(conn, datetime.now(UTC) + timedelta(seconds=1))
    new = await _append(
        pool,
        StreamWrite(
            f"task-{task}",
            1,
            [task_moved(task, team_id=team, status=TaskStatus.DONE, previous=TaskStatus.TODO)],
        ),
    )
    await _project(pool, new)
    async with pool.acquire() as conn:
        after = await store.changes_after(conn, team, old[0].position, limit=10)

    assert kept == 0
    assert [u.position for u in before.updates] == [old[0].position]
    assert dropped >= 1
    assert after.horizon == old[0].position
    assert [u.position for u in after.updates] == [new[0].position]


async def test_a_resume_past_the_replay_bytes_is_told_to_read_the_board(
    pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few changes, but large ones (a consent change carries every tagged card of its
    # patient): the count alone would let a resume hold all of them.
    team = f"team-{uuid.uuid4().hex[:8]}"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    recorded = await _append(
        pool,
        *(
            StreamWrite(f"task-{i}", 0, [task_created(i, team_id=team, title="x" * 2000)])
            for i in ids
        ),
    )
    await _project(pool, recorded)
    async with pool.acquire() as conn:
        sizes = await conn.fetch(
            "SELECT octet_length(body::text) AS size FROM board_changes WHERE team_id = $1",
            team,
        )
        two_and_a_half = sum(r["size"] for r in sizes) * 5 // 6  # three alike
        bounded = await store.changes_after(conn, team, 0, limit=10, max_bytes=two_and_a_half)
        unbounded = await store.changes_after(conn, team, 0, limit=10)
    monkeypatch.setattr(live, "REPLAY_BYTES", two_and_a_half)
    with pytest.raises(StateConflict) as refused:
        ctx = SimpleNamespace(database=pool, repository=SimpleNamespace(store=EventStore(pool)))
        await live.missed(ctx, team, 0, None)  # type: ignore[arg-type]

    assert (len(bounded.updates), bounded.more) == (2, True)
    assert (len(unbounded.updates), unbounded.more) == (3, False)
    assert refused.value.extensions["refetch"] is True


async def test_a_read_at_least_a_position_waits_for_the_board_then_answers_or_says_it_is_behind(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    # No worker runs here: the board moves only when the test projects the store.
    quick = settings.model_copy(update={"read_wait_seconds": 0.2})
    async with in_process_api(pool, quick) as api:
        team = (await gql(api, op.CREATE_TEAM, {"name": "Waits"}, token=LEAD))["createTeam"]["id"]
        other = (await gql(api, op.CREATE_TEAM, {"name": "Others"}, token=LEAD))["createTeam"]
        await rebuild.rebuild(pool)
        response = await api.post(
            "/graphql",
            json={"query": op.CREATE_TASK, "variables": {"teamId": team, "title": "Call"}},
            headers={"Authorization": f"Bearer {LEAD}"},
        )
        at = response.json()["extensions"]["position"]
        with pytest.raises(GraphQLErrors) as behind:
            await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=LEAD)
        # Another team's later change does not hold this board back.
        later = await api.post(
            "/graphql",
            json={"query": op.CREATE_TASK, "variables": {"teamId": other["id"], "title": "X"}},
            headers={"Authorization": f"Bearer {LEAD}"},
        )
        await rebuild.rebuild(pool)
        board = (await gql(api, BOARD_AT, {"teamId": team, "atLeast": at}, token=LEAD))["board"]
        elsewhere = later.json()["extensions"]["position"]
        unmoved = (await gql(api, BOARD_AT, {"teamId": team, "atLeast": elsewhere}, token=LEAD))[
            "board"
        ]
        head = await pool.fetchval("SELECT max(position) FROM events")

    [error] = behind.value.errors
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["atLeast"] == at
    assert int(error["extensions"]["position"]) < int(at)
    assert [t["id"] for c in board["columns"] for t in c["tasks"]] == [
        response.json()["data"]["createTask"]["id"]
    ]
    assert board["position"] == at
    assert unmoved["position"] == at and int(elsewhere) == head > int(at)
