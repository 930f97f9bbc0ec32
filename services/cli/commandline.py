"""What the `carecoord` subcommands share: failing with one line, running database work, and
writing an export file that only its owner can read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from services.settings import Settings, get_settings

if TYPE_CHECKING:
    from services.audit.keys import ReaderKeys

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    typer.echo(f"carecoord: {message}", err=True)
    return typer.Exit(code=2)


def stack_settings() -> Settings:
    """The settings of an operator command: the environment's, and what it leaves unset
    from the stack file of a running `carecoord up` in the data directory (one line on
    stderr says so, with no secret; at log level debug, also when nothing was taken)."""
    from services.common import stack_file

    settings = get_settings()
    resolved = stack_file.resolve(settings)
    if resolved.used or settings.log_level.lower() == "debug":
        typer.echo(f"carecoord: {stack_file.describe(resolved)}", err=True)
    return resolved.settings


def need(settings: Settings, what: str) -> None:
    if what == "database" and not settings.database_url:
        from services.common import stack_file

        raise fail(stack_file.missing_database(settings))
    if what == "kafka" and not settings.kafka_bootstrap:
        raise fail("CARECOORD_KAFKA_BOOTSTRAP is not set (`carecoord up` sets it for its parts)")
    if what == "audit keys":
        audit_keys(settings)
    if what == "audit signing key":
        from services.audit import keys

        try:
            keys.load(settings)
        except keys.BadKeys as exc:
            raise fail(str(exc)) from exc


def audit_keys(settings: Settings) -> ReaderKeys:
    """The audit log's keys, or a one-line failure saying which settings are missing."""
    from services.audit import keys

    try:
        return keys.load_reader(settings)
    except keys.BadKeys as exc:
        raise fail(str(exc)) from exc


def warn_if_owner(settings: Settings, part: str) -> None:
    """Log a WARNING when this service's database role could change the schema (it owns
    tables, or is a superuser): the risk of an old single-URL deployment, named at every
    start rather than refused, so an upgrade does not stop patient care."""
    from services.common import db_roles
    from services.common.log import get_logger

    assert settings.database_url is not None
    why = asyncio.run(db_roles.services_role_risk(settings.database_url))
    if why is not None:
        get_logger("services.db").warning("db.services_run_as_owner", part=part, risk=why)


def with_database(
    settings: Settings, work: Callable[[Any], Awaitable[T]], *, url: str | None = None
) -> T:
    """Run `work` with a small pool on the configured database (or `url`); a database that
    cannot be reached (or migrated) ends the command with one line saying why."""
    from services.common import db

    async def main() -> T:
        dsn = url or settings.database_url
        assert dsn is not None
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except (db.DatabaseUnavailable, db.MigrationError) as exc:
        raise fail(str(exc)) from exc


def check_target(out: Path, *, force: bool) -> None:
    """Refuse a file that cannot be written before any work is done."""
    folder = out.resolve().parent
    if not folder.is_dir():
        raise fail(f"--out {out}: the folder {folder} does not exist; create it first")
    if out.is_dir():
        raise fail(f"--out {out} is a folder; give a file name")
    if out.exists() and not force:
        raise fail(f"--out {out} already exists; pass --force to replace it")


def write_private(out: Path, text: str, *, force: bool) -> None:
    """Write an export readable by its owner only (it holds PHI): a new file is created
    exclusively with mode 0600 (never chmod-ed afterwards, so no moment exists when others
    could open it); a replaced one (`--force`) is written beside it the same way and
    renamed over it, so a reader never sees half an export."""
    try:
        if force:
            fd, temporary = tempfile.mkstemp(dir=out.resolve().parent, prefix=f".{out.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
                    stream.write(text)
                os.replace(temporary, out)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            return
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
                stream.write(text)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    except FileExistsError as exc:
        raise fail(f"--out {out} appeared while exporting; nothing was written") from exc
    except OSError as exc:
        raise fail(f"--out {out}: {exc.strerror or exc}") from exc
