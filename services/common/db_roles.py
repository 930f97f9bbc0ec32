"""The database roles: an owner that owns the schema and runs the migrations, and the
services' login role, which owns nothing.

Why two: the owner of a table may disable its triggers, DETACH or DROP its partitions and
TRUNCATE it, whatever was granted or revoked. The services only read and write rows, so
they log in as `carecoord_app` (migration 0008 gives it exactly the DML they need, and
nothing on the audit tables beyond INSERT and SELECT); only `carecoord migrate` (and
archiving, which detaches months) logs in as the owner.

Roles belong to the whole cluster, so creating them is idempotent and safe when several
databases on one server (tests, bench) do it at once. What needs a superuser (creating the
roles, letting the owner create in a database) is here for the embedded stack and the
tests; on a managed server the operator does it once (deploy/README.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from services.common.db import Conn

# Owns the tables and runs migrations (embedded stack and tests; in production any role
# the operator chooses, given as CARECOORD_MIGRATE_DATABASE_URL).
OWNER_ROLE = "carecoord_owner"
# The services' role: named in migration 0008's grants. A login role of another name works
# too when granted membership of it.
APP_ROLE = "carecoord_app"
# The audit writer's role (SET LOCAL ROLE), made by migration 0005.
AUDIT_ROLE = "carecoord_audit"


class RoleSetupError(RuntimeError):
    """The roles could not be created or prepared; the message says what to do."""


# One statement per role, each tolerating a concurrent creator (duplicate_object, or
# unique_violation when two sessions race on pg_authid). Attributes are set every time,
# so a role made by an older version (or by hand) is brought to what it must be.
_CREATE_ROLE = """
DO $$
BEGIN
    BEGIN
        CREATE ROLE {role} NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
END
$$
"""


async def create_roles(conn: Conn, *, owner_password: str, app_password: str) -> None:
    """As a superuser: create (or update) the owner, the app and the audit roles.

    The owner and the app role log in with the given passwords and may do nothing beyond
    that: no superuser, no CREATEROLE, no CREATEDB, no BYPASSRLS. The owner may grant the
    audit role (migrations 0005 and 0008 do), and is a member of it so 0005's own grant
    of it to the migrating role succeeds.
    """
    for role in (OWNER_ROLE, APP_ROLE, AUDIT_ROLE):
        await conn.execute(_CREATE_ROLE.format(role=role))
    for role, password in ((OWNER_ROLE, owner_password), (APP_ROLE, app_password)):
        # Utility statements take no parameters: the server quotes the literal itself.
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %L', $1::text, $2::text)",
            role,
            password,
        )
        await conn.execute(statement)
    await conn.execute(
        f"ALTER ROLE {AUDIT_ROLE} WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
    )
    # Granted again on every start: PostgreSQL only notes that it is held already.
    await conn.execute(f"GRANT {AUDIT_ROLE} TO {OWNER_ROLE} WITH ADMIN OPTION")


async def prepare_database(conn: Conn) -> int:
    """As a superuser, in the services' database: let the owner create in schema public,
    and hand it what the connected role made there before roles were split (an embedded
    data directory migrated by the superuser). Returns how many objects changed owner."""
    await conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {OWNER_ROLE}")
    moved = 0
    async with conn.transaction():
        # Tables first: their indexes, owned sequences and row types follow them.
        for kind, statement in (
            ("'r', 'p', 'f'", "TABLE"),
            ("'v'", "VIEW"),
            ("'m'", "MATERIALIZED VIEW"),
            ("'S'", "SEQUENCE"),
        ):
            names = await conn.fetch(
                f"""
                SELECT c.oid::regclass::text AS name FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ({kind})
                  AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                """  # noqa: S608 - constant relkinds
            )
            for r in names:
                await conn.execute(f"ALTER {statement} {r['name']} OWNER TO {OWNER_ROLE}")
            moved += len(names)
        functions = await conn.fetch(
            """
            SELECT p.oid::regprocedure::text AS name FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public'
              AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
            """
        )
        for r in functions:
            await conn.execute(f"ALTER FUNCTION {r['name']} OWNER TO {OWNER_ROLE}")
        moved += len(functions)
    return moved


def with_role(url: str, role: str, password: str) -> str:
    """The same server and database as `url`, logging in as `role`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def owns_schema_objects(conn: Conn) -> str | None:
    """Why the connected role could change the schema (a superuser, or it owns, or
    inherits the ownership of, a table or function in schema public), or None."""
    row: Any = await conn.fetchrow(
        """
        SELECT r.rolsuper,
               (SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                  AND pg_has_role(current_user, c.relowner, 'USAGE')
                ORDER BY c.relname LIMIT 1) AS owned
        FROM pg_roles r WHERE r.rolname = current_user
        """
    )
    if row is None:
        return None
    if row["rolsuper"]:
        return "it is a superuser"
    if row["owned"] is not None:
        return f"it owns the table {row['owned']} (and the schema with it)"
    return None


# What running the services as the owner risks, for the warning at start.
OWNER_RISK = (
    "anyone who takes over a service (or its database password) can disable the audit "
    "log's append-only trigger, DETACH, DROP or TRUNCATE its partitions, and rewrite the "
    "event store; set CARECOORD_DATABASE_URL to a role that owns nothing (carecoord_app, "
    "see deploy/README.md) and CARECOORD_MIGRATE_DATABASE_URL to the owner's"
)


async def services_role_risk(url: str) -> str | None:
    """A warning when the role at `url` (the services') could change the schema, or None.
    An unreachable database is no warning: the service says so itself when it starts."""
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    try:
        role = await conn.fetchval("SELECT current_user")
        why = await owns_schema_objects(conn)
    finally:
        await conn.close()
    if why is None:
        return None
    return f"the services run as the database role {role!r}, and {why}: {OWNER_RISK}"
