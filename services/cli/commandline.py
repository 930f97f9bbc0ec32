"""What the `carecoord` subcommands share: failing with one line, and running database work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from services.settings import Settings

if TYPE_CHECKING:
    from services.audit.keys import AuditKeys

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    typer.echo(f"carecoord: {message}", err=True)
    return typer.Exit(code=2)


def need(settings: Settings, what: str) -> None:
    if what == "database" and not settings.database_url:
        raise fail("CARECOORD_DATABASE_URL is not set (`carecoord up` sets it for its parts)")
    if what == "kafka" and not settings.kafka_bootstrap:
        raise fail("CARECOORD_KAFKA_BOOTSTRAP is not set (`carecoord up` sets it for its parts)")
    if what == "audit keys":
        audit_keys(settings)


def audit_keys(settings: Settings) -> AuditKeys:
    """The audit log's keys, or a one-line failure saying which settings are missing."""
    from services.audit import keys

    try:
        return keys.load(settings)
    except keys.BadKeys as exc:
        raise fail(str(exc)) from exc


def with_database(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work` with a small pool on the configured database; a database that cannot be
    reached (or migrated) ends the command with one line saying why."""
    from services.common import db

    async def main() -> T:
        assert settings.database_url is not None
        pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except (db.DatabaseUnavailable, db.MigrationError) as exc:
        raise fail(str(exc)) from exc
