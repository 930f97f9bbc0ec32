"""The services' database role owns nothing: every operation only an owner may do is
refused to it, while everything the services do works (the rest of the integration tests
run the services as this role too)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from services.common import db, db_roles
from services.common.event_store import EventStore
from services.common.projection import Positioned, apply_batch
from services.tasks import rebuild
from services.tasks.store import BoardProjection
from tests.factories import task_created

# What only the owner of a table or function (or a superuser) may do.
OWNER_ONLY = [
    "ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only",
    "ALTER TABLE audit_entries DISABLE TRIGGER ALL",
    "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only",
    "ALTER TABLE events DISABLE TRIGGER events_append_only",
    "ALTER TABLE audit_entries DETACH PARTITION {partition}",
    "DROP TABLE {partition}",
    "DROP TABLE audit_entries",
    "DROP TABLE audit_checkpoints",
    "DROP TABLE events",
    "DROP TABLE board_tasks",
    "TRUNCATE audit_entries",
    "TRUNCATE {partition}",
    "TRUNCATE audit_checkpoints",
    "TRUNCATE events",
    "TRUNCATE board_tasks",
    "TRUNCATE projection_positions",
    "UPDATE audit_entries SET outcome = 'PERMIT'",
    "DELETE FROM audit_entries",
    "UPDATE audit_checkpoints SET seq = seq + 1",
    "DELETE FROM audit_checkpoints",
    "UPDATE events SET type = 'Other'",
    "DELETE FROM events",
    "DELETE FROM schema_migrations",
    "ALTER FUNCTION audit_refuse_change() RENAME TO gone",
    "ALTER FUNCTION audit_ensure_partition(timestamptz) SECURITY INVOKER",
    "DROP FUNCTION events_refuse_change() CASCADE",
    "CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RETURN NEW; END $$",
    "CREATE TABLE intruder (id int)",
    "CREATE SCHEMA intruder",
    "ALTER TABLE board_tasks ADD COLUMN intruder int",
    "CREATE INDEX intruder ON board_tasks (title)",
    "ALTER TABLE audit_entries OWNER TO carecoord_app",
    "ALTER ROLE carecoord_app SUPERUSER",
    "SET session_replication_role = replica",
]


@pytest.mark.parametrize("statement", OWNER_ONLY)
async def test_the_services_role_may_not_do_what_only_an_owner_may(
    pool: asyncpg.Pool[Any], statement: str
) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == db_roles.APP_ROLE
        partition = await conn.fetchval("SELECT audit_ensure_partition(now())")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute(statement.format(partition=partition))


async def test_the_services_role_owns_nothing_and_is_not_taken_for_the_owner(
    pool: asyncpg.Pool[Any], owner_database_url: str
) -> None:
    async with pool.acquire() as conn:
        assert await db_roles.owns_schema_objects(conn) is None
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = $1",
            db_roles.APP_ROLE,
        )
        # A GRANT by a non-owner grants nothing (PostgreSQL warns instead of failing).
        await conn.execute("GRANT UPDATE, DELETE, TRUNCATE ON audit_entries TO carecoord_app")
        wider = await conn.fetch(
            "SELECT c.relname, p.privilege FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'"
            " CROSS JOIN unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER',"
            " 'REFERENCES']) AS p(privilege)"
            " WHERE c.relkind IN ('r', 'p') AND has_table_privilege(c.oid, p.privilege)"
            " AND (p.privilege NOT IN ('UPDATE', 'DELETE')"
            " OR c.relname LIKE 'audit\\_%' AND c.relname <> 'audit_outbox'"
            " OR c.relname IN ('events', 'unique_claims', 'schema_migrations'))"
        )
    assert owned == 0
    assert [tuple(r) for r in wider] == []
    owner = await asyncpg.connect(owner_database_url)
    try:
        why = await db_roles.owns_schema_objects(owner)
    finally:
        await owner.close()
    assert why is not None and why.startswith("it owns the table")


async def test_the_services_role_appends_projects_and_rebuilds_through_the_real_code(
    pool: asyncpg.Pool[Any],
) -> None:
    store = EventStore(pool)
    await store.append("task-r1", 0, [task_created("r1", team_id="team-role")])
    items = [Positioned(r.position, r.envelope) for r in await store.read_all(0)]

    assert await apply_batch(pool, BoardProjection(), items) == 1
    assert await apply_batch(pool, BoardProjection(), items) == 0  # redelivered
    assert (await rebuild.rebuild(pool)).applied == 1
    assert (await rebuild.check(pool)).ok
    async with pool.acquire() as conn:
        # What the board publisher does with the board's outbox once Kafka has it.
        assert await conn.fetchval("SELECT count(*) FROM board_outbox") >= 1
        await conn.execute("DELETE FROM board_outbox")


async def test_migrations_refuse_to_run_as_the_services_role(database_url: str) -> None:
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(db.MigrationError, match="CARECOORD_MIGRATE_DATABASE_URL"):
            await db.migrate(pool)
    finally:
        await pool.close()


async def test_a_migration_run_twice_by_the_owner_keeps_the_grants(
    owner_database_url: str, pool: asyncpg.Pool[Any]
) -> None:
    """Roles are cluster-wide: setting them up again (another database, a restart of the
    embedded stack) changes nothing the services rely on."""
    owner = await asyncpg.connect(owner_database_url)
    try:
        assert await owner.fetchval("SELECT current_user") == db_roles.OWNER_ROLE
        sql = (db.MIGRATIONS_DIR / "0008_service_roles.sql").read_text()
        await owner.execute(sql)
    finally:
        await owner.close()
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO team_activity VALUES ('t-x', 1, 1, 'E', now())")
        await conn.execute("UPDATE team_activity SET events_applied = 2 WHERE team_id = 't-x'")
        await conn.execute("DELETE FROM team_activity WHERE team_id = 't-x'")


def _carecoord(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARECOORD_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_carecoord_migrate_runs_as_the_owner_of_the_migrate_url_and_never_as_the_services(
    database_url: str, owner_database_url: str
) -> None:
    done = _carecoord(
        {
            "CARECOORD_DATABASE_URL": database_url,
            "CARECOORD_MIGRATE_DATABASE_URL": owner_database_url,
        },
        "migrate",
    )
    assert done.returncode == 0, done.stderr
    assert "0 migration(s) applied" in done.stdout

    refused = _carecoord({"CARECOORD_DATABASE_URL": database_url}, "migrate")
    assert refused.returncode == 2
    assert "CARECOORD_MIGRATE_DATABASE_URL is not set" in refused.stderr
    assert "the role carecoord_app may not migrate" in refused.stderr
    assert "Traceback" not in refused.stderr
