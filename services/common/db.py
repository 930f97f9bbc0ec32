"""PostgreSQL plumbing: the asyncpg pool, the migrations runner, and a reachability check."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "migrations"
# Any constant: every process applying migrations takes this lock first.
_MIGRATION_LOCK = 7_206_351_001


# A connection, whether held directly or borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or refused the connection."""


class MigrationError(RuntimeError):
    """A landed migration was edited, or one failed to apply."""


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Nothing to reset when a connection goes back to the pool, which saves a round trip
    per acquire: carecoord keeps no session state (locks and roles are transaction-scoped,
    the migration lock is released explicitly, a listener's owner removes it). asyncpg
    still rolls back a transaction left open."""


class NotCommitted(RuntimeError):
    """A transaction ended in ROLLBACK where COMMIT was asked (a statement in it failed and
    its error was caught): nothing of it was written."""


@contextlib.asynccontextmanager
async def transaction(conn: Conn, *, shared_locks: Sequence[int] = ()) -> AsyncIterator[None]:
    """A transaction (READ COMMITTED, as asyncpg's) whose BEGIN goes to the server in one
    message with the transaction-scoped advisory locks `shared_locks`, taken shared in the
    order given (the simple query protocol takes both; the numbers are written into the
    statement as integers): a round trip less than BEGIN on its own. Committed when the
    block ends (NotCommitted if the server rolled it back instead), rolled back when it
    raises. asyncpg does not know of it, so `conn.transaction()` cannot be used inside."""
    if conn.is_in_transaction():
        raise RuntimeError("db.transaction on a connection already in a transaction")
    locks = ",".join(str(int(lock)) for lock in shared_locks)
    try:
        if locks:
            await conn.execute(
                "BEGIN; SELECT pg_advisory_xact_lock_shared(l) "  # noqa: S608 - integers only
                f"FROM unnest(ARRAY[{locks}]::bigint[]) WITH ORDINALITY AS u(l, n) ORDER BY n"
            )
        else:
            await conn.execute("BEGIN")
        yield
    except BaseException:
        # Whether BEGIN had reached the server is not known when a cancellation came
        # while it ran (waiting for a lock): ROLLBACK outside a transaction only warns.
        with contextlib.suppress(Exception):
            if not conn.is_closed():
                await conn.execute("ROLLBACK")
        raise
    if await conn.execute("COMMIT") != "COMMIT":
        raise NotCommitted("the transaction was rolled back: a statement in it failed")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    """Open a pool whose connections read and write jsonb as Python objects."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection[Any]:
    """One connection outside any pool, set up as the pool's are."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
    await _init_connection(conn)
    return conn


async def check(pool: asyncpg.Pool[Any]) -> None:
    """Raise DatabaseUnavailable unless the database answers a query."""
    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _migration_files(directory: Path) -> list[Path]:
    found = sorted(p for p in directory.glob("*.sql") if p.is_file())
    if not found:
        # Never "0 applied" against an empty schema: the services would fail later, obscurely.
        raise MigrationError(
            f"no migrations (*.sql) in {directory}; set CARECOORD_MIGRATIONS_DIR to the "
            "folder holding deploy/migrations"
        )
    return found


async def migrate(pool: asyncpg.Pool[Any], directory: Path | None = None) -> list[str]:
    """Apply the migrations not applied yet, in file-name order; return their names.

    Each migration runs in its own transaction and is recorded with a checksum, so a
    migration edited after it landed is refused instead of silently diverging.
    """
    files = _migration_files(directory or MIGRATIONS_DIR)
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            try:
                await conn.execute(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        name text PRIMARY KEY,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                )
                done: Mapping[str, str] = {
                    r["name"]: r["checksum"]
                    for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")
                }
            except asyncpg.InsufficientPrivilegeError as exc:
                role = await conn.fetchval("SELECT current_user")
                raise MigrationError(
                    f"the role {role} may not migrate ({exc}): migrations run as the schema "
                    "owner, set CARECOORD_MIGRATE_DATABASE_URL to the owner's URL"
                ) from exc
            for path in files:
                sql = path.read_text(encoding="utf-8")
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != checksum:
                        raise MigrationError(
                            f"migration {path.name} was edited after it was applied; "
                            "add a new migration instead"
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                            path.name,
                            checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {path.name} failed: {exc}") from exc
                applied.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied
