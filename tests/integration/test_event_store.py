"""The event store on a real PostgreSQL: atomic appends, optimistic concurrency, gap-free reads."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import asyncpg
import pytest

from services.common.event_store import (
    Claim,
    ClaimTaken,
    EventStore,
    NewEvent,
    StreamWrite,
    WrongExpectedVersion,
)
from tests.factories import goal_added


def goal(plan_id: str, n: int) -> NewEvent:
    return goal_added(plan_id, team_id=f"team-{n % 5}", description=f"goal {n}", patient_id="p-1")


async def test_appended_events_read_back_in_stream_order_with_versions(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    recorded = await store.append("plan-a", 0, [goal("plan-a", i) for i in range(3)])
    more = await store.append("plan-a", 3, [goal("plan-a", 3)])

    stream = await store.read_stream("plan-a")

    assert [e.stream_version for e in stream] == [1, 2, 3, 4]
    assert [e.event_id for e in stream] == [r.envelope.event_id for r in recorded + more]
    assert [r.position for r in recorded + more] == [1, 2, 3, 4]
    assert await store.stream_version("plan-a") == 4
    assert await store.stream_version("never-written") == 0


async def test_a_stale_expected_version_raises_a_conflict_and_writes_nothing(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    await store.append("plan-b", 0, [goal("plan-b", 0)])

    with pytest.raises(WrongExpectedVersion) as info:
        await store.append("plan-b", 0, [goal("plan-b", 1), goal("plan-b", 2)])

    assert info.value.actual == 1
    assert len(await store.read_stream("plan-b")) == 1
    assert await store.head() == 1


async def test_fifty_concurrent_appends_with_one_expected_version_let_exactly_one_through(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    await store.append("plan-c", 0, [goal("plan-c", 0)])

    async def attempt(n: int) -> str:
        try:
            await store.append("plan-c", 1, [goal("plan-c", n), goal("plan-c", n + 100)])
        except WrongExpectedVersion:
            return "conflict"
        return "ok"

    outcomes = await asyncio.gather(*(attempt(n) for n in range(50)))

    assert outcomes.count("ok") == 1
    assert outcomes.count("conflict") == 49
    stream = await store.read_stream("plan-c")
    assert [e.stream_version for e in stream] == [1, 2, 3]  # nothing partial
    assert await store.head() == 3


async def test_events_cannot_be_updated_or_deleted(pool: asyncpg.Pool[Any]) -> None:
    store = EventStore(pool)
    await store.append("plan-d", 0, [goal("plan-d", 0)])

    for sql in (
        "UPDATE events SET type = 'Other'",
        "DELETE FROM events",
        "TRUNCATE events",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(sql)
    assert len(await store.read_stream("plan-d")) == 1


async def test_a_reader_tailing_read_all_sees_every_position_once_in_order_under_load(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    writers, per_writer = 8, 500
    total = writers * per_writer
    done = asyncio.Event()

    async def writer(w: int) -> None:
        stream = f"writer-{w}"
        for version in range(per_writer):
            await store.append(stream, version, [goal(stream, version)])

    seen: list[int] = []

    async def reader() -> None:
        after = 0
        while len(seen) < total:
            batch = await store.read_all(after, limit=97)
            if not batch:
                if done.is_set() and await store.head() == after:
                    break
                await asyncio.sleep(0)
                continue
            seen.extend(r.position for r in batch)
            after = batch[-1].position

    async def write_all() -> None:
        await asyncio.gather(*(writer(w) for w in range(writers)))
        done.set()

    await asyncio.gather(reader(), write_all())

    assert seen == list(range(1, total + 1))
    for w in range(writers):
        versions = [e.stream_version for e in await store.read_stream(f"writer-{w}")]
        assert versions == list(range(1, per_writer + 1))


async def test_a_write_to_several_streams_lands_whole_or_not_at_all(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    await store.append("plan-m1", 0, [goal("plan-m1", 0)])

    recorded = await store.append_many(
        [
            StreamWrite("plan-m1", 1, [goal("plan-m1", 1)]),
            StreamWrite("plan-m2", 0, [goal("plan-m2", 2), goal("plan-m2", 3)]),
        ]
    )
    with pytest.raises(WrongExpectedVersion):
        await store.append_many(
            [
                StreamWrite("plan-m3", 0, [goal("plan-m3", 4)]),
                StreamWrite("plan-m2", 0, [goal("plan-m2", 5)]),  # stale: plan-m2 is at 2
            ]
        )

    assert [[r.position for r in rs] for rs in recorded] == [[2], [3, 4]]
    assert [[r.envelope.stream_version for r in rs] for rs in recorded] == [[2], [1, 2]]
    assert await store.stream_version("plan-m3") == 0
    assert await store.head() == 4


async def test_a_claimed_value_can_be_held_by_one_stream_only_even_under_concurrency(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)

    async def attempt(n: int) -> str:
        try:
            await store.append(
                f"patient-{n}", 0, [goal(f"patient-{n}", n)], claims=[Claim("mrn", "team-1:A1")]
            )
        except ClaimTaken as exc:
            assert "A1" not in str(exc)  # the claimed value may be PHI: never in messages
            return "taken"
        return "ok"

    outcomes = await asyncio.gather(*(attempt(n) for n in range(10)))
    await store.append("patient-x", 0, [goal("patient-x", 99)], claims=[Claim("mrn", "team-2:A1")])

    assert sorted(outcomes) == ["ok"] + ["taken"] * 9
    assert await store.head() == 2  # the winner and the other team's patient; nothing else
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM unique_claims")


async def test_a_patients_streams_are_found_by_the_event_that_started_them(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    for n, patient in enumerate(["p-7", "p-8", "p-7"]):
        await store.append(
            f"plan-{n}",
            0,
            [goal_added(f"plan-{n}", team_id="t", patient_id=patient) for _ in range(2)],
        )

    assert await store.streams_started_for_patient("p-7", "GoalAdded") == ["plan-0", "plan-2"]
    streams = await store.read_streams(["plan-2", "plan-1", "missing"])
    assert sorted(streams) == ["plan-1", "plan-2"]
    assert [e.stream_version for e in streams["plan-2"]] == [1, 2]


async def test_commands_sharing_a_group_commit_are_each_all_or_nothing(
    pool: asyncpg.Pool[Any],
) -> None:
    """Concurrent commands share a commit; a stale one, or one whose claim is taken, is
    refused alone and leaves neither a gap nor a partial write."""
    store = EventStore(pool)
    await store.append("plan-g0", 0, [goal("plan-g0", 0)])
    batches: list[int] = []
    transaction = store._transaction

    async def counted(batch: Any) -> None:
        batches.append(len(batch))
        await transaction(batch)

    store._transaction = counted  # type: ignore[method-assign]

    async def command(n: int) -> str:
        stream = f"plan-g{n}"
        try:
            if n == 3:  # stale: plan-g0 is at version 1
                await store.append_many(
                    [
                        StreamWrite("plan-g3", 0, [goal(stream, n)]),
                        StreamWrite("plan-g0", 0, [goal("plan-g0", n)]),
                    ]
                )
            elif n in (5, 6):  # the same claim: the first of the two holds it
                await store.append(stream, 0, [goal(stream, n)], claims=[Claim("mrn", "t:B7")])
            else:
                await store.append(stream, 0, [goal(stream, n), goal(stream, n + 100)])
        except (WrongExpectedVersion, ClaimTaken) as exc:
            return type(exc).__name__
        return "ok"

    outcomes = await asyncio.gather(*(command(n) for n in range(1, 13)))

    assert max(batches) > 1, batches  # the commands did share commits
    assert outcomes[2] == "WrongExpectedVersion"
    assert sorted(outcomes[4:6]) == ["ClaimTaken", "ok"]
    assert outcomes.count("ok") == 10
    assert await store.read_stream("plan-g3") == []  # nothing of the refused command
    assert len(await store.read_stream("plan-g0")) == 1
    everything = await store.read_all(0, 100)
    assert [r.position for r in everything] == list(range(1, len(everything) + 1))
    assert len(everything) == 1 + 9 * 2 + 1  # plan-g0, nine two-event commands, one claimer
    for n in range(1, 13):
        versions = [e.stream_version for e in await store.read_stream(f"plan-g{n}")]
        assert versions in ([], [1], [1, 2]), (n, versions)


async def test_a_request_cancelled_while_its_commit_runs_leaves_no_unread_error_behind(
    pool: asyncpg.Pool[Any],
) -> None:
    """The commit goes on for the others in its batch; the cancelled caller's outcome (here
    a conflict) is dropped quietly instead of surfacing as an unretrieved future."""
    store = EventStore(pool)
    await store.append("plan-k0", 0, [goal("plan-k0", 0)])
    entered, gate = asyncio.Event(), asyncio.Event()
    transaction = store._transaction

    async def held(batch: Any) -> None:
        entered.set()
        await gate.wait()
        await transaction(batch)

    store._transaction = held  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        stale = asyncio.create_task(store.append("plan-k0", 0, [goal("plan-k0", 1)]))
        await entered.wait()
        stale.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stale
        gate.set()
        store._transaction = transaction  # type: ignore[method-assign]
        # The next append waits on the advisory lock until the first commit is over.
        await store.append("plan-k1", 0, [goal("plan-k1", 0)])
        del stale
        gc.collect()
    finally:
        loop.set_exception_handler(previous)

    assert unhandled == []
    assert len(await store.read_stream("plan-k0")) == 1
