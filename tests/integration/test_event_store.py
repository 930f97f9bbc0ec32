"""The event store on a real PostgreSQL: the contract every store keeps, and what only the
database shows (append-only tables, the append lock, group commits)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.common import db
from services.common.event_store import (
    _APPEND,
    _APPEND_LOCK,
    COLUMNS,
    Claim,
    ClaimTaken,
    EventStore,
    EventStorePort,
    RecordedEvent,
    StreamWrite,
    WrongExpectedVersion,
    new_envelope,
    row_values,
)

# Before the import: pytest explains a failing assert only in modules it rewrites, and it
# rewrites only test_*.py files unless told.
pytest.register_assert_rewrite("tests.event_store_contract")
from tests.event_store_contract import (  # noqa: E402 - registered above
    EventStoreContract,
    Ticking,
    check_mixed_commands,
    goal,
    run_mixed_commands,
)


class TestEventStoreOnPostgreSQL(EventStoreContract):
    @pytest.fixture
    def store(self, pool: asyncpg.Pool[Any], clock: Ticking) -> EventStorePort:
        return EventStore(pool, clock=clock)


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


async def test_claims_cannot_be_updated_or_released(pool: asyncpg.Pool[Any]) -> None:
    store = EventStore(pool)
    await store.append("patient-d", 0, [goal("patient-d", 0)], claims=[Claim("mrn", "t:D1")])

    for sql in (
        "UPDATE unique_claims SET stream_id = 'patient-e'",
        "DELETE FROM unique_claims",
        "TRUNCATE unique_claims",
    ):
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    with pytest.raises(ClaimTaken):
        await store.append("patient-e", 0, [goal("patient-e", 1)], claims=[Claim("mrn", "t:D1")])


async def test_an_append_waits_while_another_writer_holds_the_append_lock_so_none_is_skipped(
    pool: asyncpg.Pool[Any],
) -> None:
    """Another replica mid-commit holds the lock with position 1 taken but not yet visible.
    An append here must wait for it: were it to commit position 2 first, a reader would move
    past 1 before 1 existed, and never see it."""
    store = EventStore(pool)
    late = RecordedEvent(1, new_envelope("plan-late", 1, goal("plan-late", 0), Ticking()))
    async with pool.acquire() as other:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
        await other.execute(
            f"INSERT INTO events ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))})",
            *row_values(late),
        )
        follower = asyncio.create_task(store.append("plan-next", 0, [goal("plan-next", 1)]))
        await asyncio.sleep(0.2)
        waited = not follower.done()
        seen_meanwhile = await store.read_all(0)
        await transaction.commit()
    [recorded] = await follower

    assert waited
    assert seen_meanwhile == []
    assert recorded.position == 2
    assert [r.envelope.stream_id for r in await store.read_all(0)] == ["plan-late", "plan-next"]


async def test_commands_sharing_a_group_commit_are_each_all_or_nothing(
    pool: asyncpg.Pool[Any],
) -> None:
    """Concurrent commands share a commit; a stale one, or one whose claim is taken, is
    refused alone and leaves neither a gap nor a partial write."""
    store = EventStore(pool)
    batches: list[int] = []
    transaction = store._transaction

    async def counted(batch: Any) -> None:
        batches.append(len(batch))
        await transaction(batch)

    store._transaction = counted  # type: ignore[method-assign]

    outcomes = await run_mixed_commands(store)

    assert max(batches) > 1, batches  # the commands did share commits
    await check_mixed_commands(store, outcomes)


async def test_every_command_of_a_group_commit_has_its_answer_at_once(
    pool: asyncpg.Pool[Any],
) -> None:
    """The commit answers all its commands together: none waits for a turn at a lock to learn
    that its batch is done (an event-loop pass each, so the last of 32 a pass per command
    later, which is what held group commits of 64 writers back)."""
    store = EventStore(pool)
    loop = asyncio.get_running_loop()
    passes, spinning = 0, True

    def count_a_pass() -> None:  # once every pass of the loop while the test runs
        nonlocal passes
        passes += 1
        if spinning:
            loop.call_soon(count_a_pass)

    gate = asyncio.Event()
    committed: list[int] = []
    transaction = store._transaction

    async def held(batch: Any) -> None:
        await gate.wait()
        await transaction(batch)
        committed.append(passes)

    store._transaction = held  # type: ignore[method-assign]
    answered: list[int] = []

    async def command(n: int) -> None:
        await store.append(f"plan-a{n}", 0, [goal(f"plan-a{n}", n)])
        answered.append(passes)

    first = asyncio.create_task(command(0))  # its commit waits at the gate
    for _ in range(3):
        await asyncio.sleep(0)
    queued = [asyncio.create_task(command(n)) for n in range(1, 33)]
    for _ in range(3):
        await asyncio.sleep(0)
    loop.call_soon(count_a_pass)
    gate.set()
    try:
        await asyncio.gather(first, *queued)
    finally:
        spinning = False

    assert len(committed) == 2  # the first command's commit, then the 32 queued meanwhile
    assert max(answered) - committed[1] <= 2, (committed, sorted(answered))


async def test_a_group_commit_is_one_round_trip(database_url: str) -> None:
    """A commit is one statement in autocommit (events_append does the lock, the reads,
    the checks and the INSERT in the server): no BEGIN, no COMMIT. Every round trip is a
    socket write and a wake-up on each side, and the append lock was held across four."""
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        sent: list[str] = []
        async with pool.acquire() as conn:  # the pool's one connection, logged from now on
            conn.add_query_logger(lambda logged: sent.append(logged.query))
        store = EventStore(pool)
        await store.append("plan-rt", 0, [goal("plan-rt", 1)])  # asyncpg learns the types
        sent.clear()
        appended = await asyncio.gather(
            store.append("plan-rt", 1, [goal("plan-rt", 2)]),
            store.append("plan-ru", 0, [goal("plan-ru", 3)], claims=[Claim("mrn", "t:RT")]),
            store.append("plan-rt", 1, [goal("plan-rt", 4)]),
            return_exceptions=True,
        )
        assert len(sent) == 1, [q[:40] for q in sent]
        assert sent[0].startswith("SELECT * FROM events_append(")
        assert [e.stream_version for e in await store.read_stream("plan-rt")] == [1, 2]
        assert isinstance(appended[2], WrongExpectedVersion)
        assert [r.position for r in appended[1]] == [3]  # type: ignore[union-attr]
    finally:
        await pool.close()


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
    # The loop is the session's: garbage earlier tests left (a Kafka client's pending task,
    # say) is reported now, to the usual handler, not blamed on this test's collect below.
    gc.collect()
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


async def test_a_command_refused_on_its_second_write_leaves_its_first_stream_to_the_next(
    pool: asyncpg.Pool[Any],
) -> None:
    """In one group commit: a command whose first write passes and second is stale is
    refused whole, and the next command, written against the first stream's version
    before it, lands (events_append counts the refused command's first write back)."""
    store = EventStore(pool)
    both = [
        StreamWrite("plan-v1", 0, [goal("plan-v1", 1)]),
        StreamWrite("plan-v2", 5, [goal("plan-v2", 2)]),
    ]
    refused, landed = await asyncio.gather(
        store.append_many(both),
        store.append("plan-v1", 0, [goal("plan-v1", 3)]),
        return_exceptions=True,
    )

    assert isinstance(refused, WrongExpectedVersion), refused
    assert (refused.stream_id, refused.expected, refused.actual) == ("plan-v2", 5, 0)
    assert isinstance(landed, list), landed
    assert [(r.position, r.envelope.stream_version) for r in landed] == [(1, 1)]
    assert await store.stream_version("plan-v2") == 0


async def test_a_command_the_database_refuses_as_data_fails_alone_in_its_group_commit(
    pool: asyncpg.Pool[Any],
) -> None:
    """A NUL in a stream id (text PostgreSQL will not store) fails its own command; the
    command sharing its group commit lands."""
    store = EventStore(pool)
    bad, good = await asyncio.gather(
        store.append("plan-\x00nul", 0, [goal("plan-nul", 1)]),
        store.append("plan-ok", 0, [goal("plan-ok", 2)]),
        return_exceptions=True,
    )

    assert isinstance(bad, asyncpg.DataError), bad
    assert isinstance(good, list), good
    assert [(r.position, r.envelope.stream_id) for r in good] == [(1, "plan-ok")]


async def test_a_claim_taken_outside_the_append_lock_refuses_the_command_never_naming_the_key(
    pool: asyncpg.Pool[Any],
) -> None:
    """A writer that skips the lock (by hand, say) holds a claim not yet committed: the
    append's check cannot see it, its insert waits and then finds it taken. The command is
    refused whole, and no error in the chain carries the key (an MRN is PHI); the next
    attempt, as the handler makes it, is told the claim is taken."""
    store = EventStore(pool)
    async with pool.acquire() as other:
        transaction = other.transaction()
        await transaction.start()
        await other.execute(
            "INSERT INTO unique_claims (scope, key, stream_id) "
            "VALUES ('mrn', 't:SECRET-MRN-7', 'patient-x')"
        )
        claiming = asyncio.create_task(
            store.append(
                "patient-y", 0, [goal("patient-y", 1)], claims=[Claim("mrn", "t:SECRET-MRN-7")]
            )
        )
        await asyncio.sleep(0.2)
        await transaction.commit()
    with pytest.raises(WrongExpectedVersion) as refused:
        await claiming

    cause = refused.value.__cause__
    told = f"{refused.value!r} {cause!r} {cause} {getattr(cause, 'detail', '')}"
    assert "SECRET-MRN" not in told, told
    assert await store.stream_version("patient-y") == 0
    with pytest.raises(ClaimTaken):
        await store.append(
            "patient-y", 0, [goal("patient-y", 1)], claims=[Claim("mrn", "t:SECRET-MRN-7")]
        )


async def test_an_append_outside_read_committed_is_refused_and_writes_nothing(
    database_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """Under REPEATABLE READ the statement's snapshot would predate the append lock, and
    the head it reads could be stale: events_append refuses to run."""
    repeatable = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=1,
        server_settings={"default_transaction_isolation": "repeatable read"},
    )
    try:
        with pytest.raises(asyncpg.InvalidTransactionStateError):
            await EventStore(repeatable).append("plan-rr", 0, [goal("plan-rr", 1)])
    finally:
        await repeatable.close()
    assert await EventStore(pool).stream_version("plan-rr") == 0


async def test_cancelled_while_finding_the_command_at_fault_every_caller_is_answered(
    pool: asyncpg.Pool[Any],
) -> None:
    """A batch refused for a duplicate event id is committed again a command at a time; a
    shutdown in the middle answers the commands not yet retried instead of leaving their
    callers waiting for ever."""
    store = EventStore(pool)
    duplicate = uuid.uuid4()
    await store.append("plan-f0", 0, [replace(goal("plan-f0", 0), event_id=duplicate)])
    transaction = store._transaction
    entered, calls = asyncio.Event(), 0

    async def held(batch: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first command on its own: held until cancelled
            entered.set()
            await asyncio.Event().wait()
        await transaction(batch)

    store._transaction = held  # type: ignore[method-assign]
    appends = [
        asyncio.create_task(
            store.append("plan-f1", 0, [replace(goal("plan-f1", 1), event_id=duplicate)])
        ),
        asyncio.create_task(store.append("plan-f2", 0, [goal("plan-f2", 2)])),
        asyncio.create_task(store.append("plan-f3", 0, [goal("plan-f3", 3)])),
    ]
    await entered.wait()
    assert store._committer is not None
    store._committer.cancel()
    _, waiting = await asyncio.wait(appends, timeout=10)

    assert not waiting
    for append in appends:
        assert isinstance(append.exception(), RuntimeError), append.exception()


async def test_events_append_refuses_arrays_that_do_not_agree(pool: asyncpg.Pool[Any]) -> None:
    """The function trusts no caller: a write said to hold two events with one sent, or a
    command numbered out of order, is refused before the lock, and nothing is written."""
    now = datetime.now(UTC)
    event = [["plan-x"], [uuid.uuid4()], ["GoalAdded"], [1], ["t"], [None], ["a"], [now]]
    tail = [["c"], [None], ["{}"]]
    for writes in (
        [["plan-x"], [0], [2], [1]],  # two events counted, one sent
        [["plan-x"], [0], [1], [2]],  # the first command numbered 2
    ):
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await pool.fetchrow(_APPEND, *writes, [], [], [], *event, *tail)
    assert await EventStore(pool).head() == 0
