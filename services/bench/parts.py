"""The parts a bench run measures on: PostgreSQL and a Kafka-protocol broker, either the
configured ones or embedded ones started for the run, and a fresh database of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.common import embedded
from services.settings import Settings


class PartsUnavailable(RuntimeError):
    """PostgreSQL or the broker could not be started or reached; the message says which."""


@dataclass
class Parts:
    settings: Settings
    postgres: str  # where PostgreSQL runs, for the report
    broker: str
    _procs: list[tuple[subprocess.Popen[bytes], int]] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        assert self.settings.database_url
        return self.settings.database_url


@contextlib.contextmanager
def started(tmp: Path) -> Iterator[Parts]:
    """PostgreSQL (CARECOORD_DATABASE_URL, else embedded and durable, as `carecoord up`
    runs it) with a fresh database dropped afterwards, and the broker
    (CARECOORD_KAFKA_BOOTSTRAP, else the embedded Tansu) with topics of the run's own."""
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    database: tuple[str, str] | None = None
    try:
        admin_dsn = os.environ.get("CARECOORD_DATABASE_URL")
        postgres = "configured"
        if not admin_dsn:
            pg = embedded.EmbeddedPostgres(tmp / "pg", embedded.free_port())
            pg.initdb()
            spec = pg.spec(tmp / "postgres.log")
            procs.append((embedded.spawn(spec), spec.stop_signal))
            admin_dsn, postgres = pg.dsn, "embedded"
        asyncio.run(_wait_for_postgres(admin_dsn))
        name = f"carecoord_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
        database = (admin_dsn, name)

        bootstrap = os.environ.get("CARECOORD_KAFKA_BOOTSTRAP")
        broker = "configured"
        if not bootstrap:
            port = embedded.free_port()
            spec = embedded.tansu_spec(port, tmp / "kafka.log")
            procs.append((embedded.spawn(spec), spec.stop_signal))
            bootstrap, broker = f"127.0.0.1:{port}", "embedded Tansu"
            _wait_for_port(port, "the embedded broker")

        settings = Settings(
            _env_file=None,
            data_dir=tmp / "data",
            database_url=_with_database(admin_dsn, name),
            kafka_bootstrap=bootstrap,
            topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
            jwt_secret=secrets.token_urlsafe(32),
            log_level="warning",
        )
        where = urlsplit(admin_dsn)
        yield Parts(
            settings=settings,
            postgres=f"{postgres}, {where.hostname}:{where.port or 5432}",
            broker=f"{broker}, {bootstrap}",
            _procs=procs,
        )
    finally:
        if database is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                asyncio.run(
                    _admin(database[0], f'DROP DATABASE IF EXISTS "{database[1]}" WITH (FORCE)')
                )
        for proc, sig in reversed(procs):
            embedded.stop(proc, sig)


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _wait_for_postgres(dsn: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            await _admin(dsn, "SELECT 1")
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if time.monotonic() > deadline:
                where = urlsplit(dsn)
                raise PartsUnavailable(
                    f"PostgreSQL at {where.hostname}:{where.port or 5432} did not answer "
                    f"within {seconds:.0f} s: {type(exc).__name__}"
                ) from exc
            await asyncio.sleep(0.1)


def _wait_for_port(port: int, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not embedded.port_in_use(port):
        if time.monotonic() > deadline:
            raise PartsUnavailable(f"{what} did not listen on port {port} within {seconds:.0f} s")
        time.sleep(0.05)


def environment(settings: Settings) -> dict[str, str]:
    """The environment that points a carecoord process at the run's parts."""
    assert settings.database_url and settings.kafka_bootstrap and settings.jwt_secret
    return {
        **os.environ,
        "CARECOORD_DATA_DIR": str(settings.data_dir.resolve()),
        "CARECOORD_DATABASE_URL": settings.database_url,
        "CARECOORD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CARECOORD_TOPIC_PREFIX": settings.topic_prefix,
        "CARECOORD_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "CARECOORD_LOG_LEVEL": settings.log_level,
        "CARECOORD_LOG_FORMAT": "json",
    }


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A carecoord process of the run's, its output kept in `log`."""
    with open(log, "wb") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


async def stop_process(proc: subprocess.Popen[bytes], *, seconds: float = 30) -> None:
    """SIGTERM a process the bench started (if still running), and SIGKILL it if it has
    not ended within `seconds`."""
    if proc.poll() is None:
        proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
