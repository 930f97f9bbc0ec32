"""db.transaction, the projector's transaction: BEGIN sent with its shared advisory locks
in one message, on a real database. It commits, rolls back, refuses to nest, says when
the server rolled it back instead of committing, and a cancellation while it waits for a
lock leaves a clean connection behind. (The tables are the test's own, so the role that
owns the schema makes them.)"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest

from services.common import db

_LOCK = 7_206_399_001


async def test_the_block_commits_and_holds_its_locks_shared_until_then(
    admin_pool: asyncpg.Pool[Any],
) -> None:
    async with admin_pool.acquire() as conn, admin_pool.acquire() as other:
        await conn.execute("CREATE TABLE IF NOT EXISTS t_commit (x integer)")
        async with db.transaction(conn, shared_locks=[_LOCK, _LOCK + 1]):
            await conn.execute("INSERT INTO t_commit VALUES (1)")
            assert await other.fetchval("SELECT pg_try_advisory_lock_shared($1)", _LOCK)
            assert not await other.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK + 1)
            assert await other.fetchval("SELECT count(*) FROM t_commit") == 0
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK + 1)
        assert await other.fetchval("SELECT count(*) FROM t_commit") == 1
        assert not conn.is_in_transaction()


async def test_an_error_rolls_it_back(admin_pool: asyncpg.Pool[Any]) -> None:
    async with admin_pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS t_error (x integer)")
        with pytest.raises(ValueError, match="no"):
            async with db.transaction(conn, shared_locks=[_LOCK]):
                await conn.execute("INSERT INTO t_error VALUES (1)")
                raise ValueError("no")
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM t_error") == 0


async def test_a_failed_statement_whose_error_was_caught_is_not_committed(
    admin_pool: asyncpg.Pool[Any],
) -> None:
    """PostgreSQL answers COMMIT in a failed transaction with ROLLBACK, and no error: a
    caller that caught the statement's error must not think its writes landed."""
    async with admin_pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS t_caught (x integer)")
        with pytest.raises(db.NotCommitted):
            async with db.transaction(conn):
                await conn.execute("INSERT INTO t_caught VALUES (1)")
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute("SELECT 1 / 0")
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM t_caught") == 0


async def test_it_refuses_to_run_inside_another_transaction(admin_pool: asyncpg.Pool[Any]) -> None:
    """Its COMMIT would end the caller's transaction half-way."""
    async with admin_pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS t_nested (x integer)")
        with pytest.raises(RuntimeError, match="already in a transaction"):
            async with conn.transaction():
                await conn.execute("INSERT INTO t_nested VALUES (1)")
                async with db.transaction(conn):
                    pass
        assert await conn.fetchval("SELECT count(*) FROM t_nested") == 0


async def test_cancelled_while_waiting_for_its_lock_it_leaves_a_clean_connection(
    database_url: str,
) -> None:
    """A rebuild holds the lock exclusively; a batch waiting for it is cancelled (the worker
    stops). The connection goes back to its pool out of any transaction, without the
    pool having to roll one back (asyncpg reports that as an error)."""
    reported: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    one = await db.create_pool(database_url, min_size=1, max_size=1)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", _LOCK)
        entered = asyncio.Event()

        async def batch() -> None:
            async with one.acquire() as conn, db.transaction(conn, shared_locks=[_LOCK]):
                entered.set()

        waiting = asyncio.ensure_future(batch())
        await asyncio.sleep(0.5)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not entered.is_set()
        await holder.execute("SELECT pg_advisory_unlock($1)", _LOCK)
        async with one.acquire() as conn:
            assert not conn.is_in_transaction()
            mine = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
            assert await conn.fetchval(mine, conn.get_server_pid()) == 0
        assert reported == []
    finally:
        loop.set_exception_handler(None)
        await holder.close()
        await one.close()
