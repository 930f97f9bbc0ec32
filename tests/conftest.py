"""Shared fixtures: a real PostgreSQL and a real Kafka-protocol broker for the session, a
fresh migrated database and unique topic names per test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common import db, db_roles, embedded
from services.common.dev_secrets import pipeline_keys
from services.settings import Settings


def _wait_for_port(
    port: int, proc: subprocess.Popen[bytes], what: str, seconds: float = 30
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        if embedded.port_in_use(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {seconds} s")


def _wait_for_postgres(dsn: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Until the server takes connections: it listens before it has finished starting up,
    and answers "the database system is starting up" meanwhile (longer on a busy machine)."""

    async def accepting() -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close()
        return True

    # A loop of its own, never made current: the session's event loop stays as it is.
    loop = asyncio.new_event_loop()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"embedded PostgreSQL exited with code {proc.returncode}")
            if loop.run_until_complete(accepting()):
                return
            time.sleep(0.1)
    finally:
        loop.close()
    raise RuntimeError(f"embedded PostgreSQL did not take connections within {seconds} s")


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser DSN: CARECOORD_TEST_DATABASE_URL, or an embedded server of our own."""
    external = os.environ.get("CARECOORD_TEST_DATABASE_URL")
    if external:
        yield external
        return
    pg = embedded.EmbeddedPostgres(
        tmp_path_factory.mktemp("pg") / "data", embedded.free_port(), durable=False
    )
    pg.initdb()
    proc = embedded.spawn(pg.spec(log_file=pg.pgdata.parent / "postgres.log"))
    try:
        _wait_for_postgres(pg.dsn, proc)
        yield pg.dsn
    finally:
        embedded.stop(proc, pg.spec().stop_signal)


def _with_database(dsn: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


# The roles' passwords on the test server (DEV, tests only; the same in every test run, so
# runs sharing a server do not change each other's).
TEST_OWNER_PASSWORD = "DEV-test-owner"
TEST_APP_PASSWORD = "DEV-test-app"


@pytest.fixture(scope="session")
async def template_database(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database with every migration applied by the owner role, copied for each test."""
    name = f"carecoord_tmpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    await db_roles.create_roles(
        admin, owner_password=TEST_OWNER_PASSWORD, app_password=TEST_APP_PASSWORD
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    inside = await asyncpg.connect(_with_database(pg_admin_dsn, name))
    try:
        await db_roles.prepare_database(inside)
    finally:
        await inside.close()
    owner_url = db_roles.with_role(
        _with_database(pg_admin_dsn, name), db_roles.OWNER_ROLE, TEST_OWNER_PASSWORD
    )
    pool = await db.create_pool(owner_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool)
    finally:
        await pool.close()
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def admin_database_url(pg_admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh copy of the migrated database, as the superuser (for tests that tamper)."""
    name = f"carecoord_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield _with_database(pg_admin_dsn, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def database_url(admin_database_url: str) -> str:
    """The test's database as the services see it: the role that owns nothing."""
    return db_roles.with_role(admin_database_url, db_roles.APP_ROLE, TEST_APP_PASSWORD)


@pytest.fixture
def owner_database_url(admin_database_url: str) -> str:
    """The test's database as the owner of its schema (migrations, archiving)."""
    return db_roles.with_role(admin_database_url, db_roles.OWNER_ROLE, TEST_OWNER_PASSWORD)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    p = await db.create_pool(database_url, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def admin_pool(admin_database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    """The test's database as the superuser: to change it behind the services' back."""
    p = await db.create_pool(admin_database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


class Broker:
    """A Tansu broker this test run owns: it can be stopped and started empty again."""

    def __init__(self, log_file: Path) -> None:
        self.port = embedded.free_port()
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = embedded.spawn(embedded.tansu_spec(self.port, log_file=self.log_file))
        _wait_for_port(self.port, self.proc, "the Tansu broker")

    def stop(self) -> None:
        if self.proc is not None:
            embedded.stop(self.proc, embedded.tansu_spec(self.port).stop_signal)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash: whatever it held in memory is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def restart_empty(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CARECOORD_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = Broker(tmp_path_factory.mktemp("kafka") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, for tests that restart it."""
    broker = Broker(tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def settings(
    database_url: str,
    owner_database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> Settings:
    settings = Settings(
        database_url=database_url,
        migrate_database_url=owner_database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        data_dir=tmp_path / "data",
        relay_watermark_check_seconds=0.5,
        _env_file=None,  # type: ignore[call-arg]  # tests never read a .env
    )
    # The pipeline key every service of the stack signs and verifies with, made as
    # `carecoord up` makes it.
    pipeline_keys(settings, create=True)
    return settings


async def wait_until(check: Any, *, seconds: float = 30, what: str = "condition") -> None:
    """Poll an async or sync predicate until it holds; fail naming what never happened."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")
