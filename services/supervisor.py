"""`carecoord up`: start, watch and stop the whole stack on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.audit import keys as audit_keys
from services.common import db, db_roles, embedded, kafka, stack_file
from services.common.dev_secrets import db_passwords, jwt_secret, pipeline_keys
from services.settings import Settings

# What each service must not inherit from the environment of `carecoord up`: no service
# needs the owner's URL, and only the audit writer (the worker) signs checkpoints.
SERVICE_UNSET = {
    "relay": ("CARECOORD_MIGRATE_DATABASE_URL", "CARECOORD_AUDIT_SIGNING_KEY"),
    "worker": ("CARECOORD_MIGRATE_DATABASE_URL",),
    "api": ("CARECOORD_MIGRATE_DATABASE_URL", "CARECOORD_AUDIT_SIGNING_KEY"),
    "witness": ("CARECOORD_MIGRATE_DATABASE_URL", "CARECOORD_AUDIT_SIGNING_KEY"),
}


class StartupError(Exception):
    """Something the stack needs is missing; the message says which and what to do."""


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass
class Child:
    spec: embedded.ChildSpec
    proc: Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float | None = None


@dataclass
class Supervisor:
    settings: Settings
    say: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    _children: list[Child] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=dict)
    _audit_keys: str = ""
    _pipeline_keys: str = ""
    _db_passwords: str = ""
    _embedded_pg_port: int | None = None
    _stack_file: Path | None = None

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self._start(stop)
            if not stop.is_set():
                await self._watch(stop)
        except StartupError as exc:
            self.say(f"carecoord up: {exc}")
            return 1
        finally:
            # First, so no command of another terminal is sent to a stack going down.
            if self._stack_file is not None:
                stack_file.remove(self._stack_file.parent, os.getpid())
            self._stop_all()
        return 0

    # -- start-up ---------------------------------------------------------------------

    async def _start(self, stop: asyncio.Event) -> None:
        s = self.settings
        data_dir = s.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if embedded.port_in_use(s.api_port, s.api_host):
            raise StartupError(
                f"port {s.api_port} on {s.api_host} (the API) is already in use: stop what "
                "listens there or set CARECOORD_API_PORT to a free port"
            )
        database_url, migrate_url = await self._postgres(data_dir)
        bootstrap = await self._kafka(data_dir)
        self._env = {
            "CARECOORD_DATA_DIR": str(data_dir),
            "CARECOORD_DATABASE_URL": database_url,
            "CARECOORD_KAFKA_BOOTSTRAP": bootstrap,
        }
        # The development stack: GraphiQL (and the introspection it needs) on, unless the
        # environment says otherwise. Production runs the API without `up`: both off.
        for tool in ("CARECOORD_GRAPHIQL", "CARECOORD_INTROSPECTION"):
            self._env[tool] = os.environ.get(tool, "true")
        settings = s.model_copy(
            update={
                "database_url": database_url,
                "migrate_database_url": migrate_url,
                "kafka_bootstrap": bootstrap,
                "data_dir": data_dir,
            }
        )
        await self._migrate(settings)
        await self._check_services_role(database_url)
        created = await kafka.ensure_topics(settings)
        self.say(
            f"  ✓ topics       {', '.join(settings.all_topics)} "
            f"({settings.topic_partitions} partitions; {len(created)} created)"
        )
        secret, source = jwt_secret(settings, create=True)
        assert secret is not None
        self._env["CARECOORD_JWT_SECRET"] = secret
        # Made here, once, so the worker and the API never race to generate two sets.
        writer_keys = audit_keys.load(settings, create=True)
        self._audit_keys = writer_keys.source
        # The API verifies checkpoints with the public half only; it never gets the seed.
        if not settings.audit_public_key:
            self._env["CARECOORD_AUDIT_PUBLIC_KEY"] = audit_keys.public_key_b64(
                writer_keys.verify_key
            )
        # Likewise the key the services sign care.audit and care.board-updates with.
        self._pipeline_keys = pipeline_keys(settings, create=True).source
        # The witness keeps the last checkpoint it verified per chain in the data dir,
        # outside the database, and names truncation, forks and deleted chains.
        for part in ("relay", "worker", "api", "witness"):
            self._launch(
                embedded.ChildSpec(
                    name=part,
                    argv=[sys.executable, "-m", "services.cli", part],
                    unset_env=SERVICE_UNSET[part],
                )
            )
            self.say(f"  ✓ {part:<12} started")
        await self._wait_for_api(stop)
        if stop.is_set():
            return
        self._stack_file = stack_file.write(
            data_dir,
            stack_file.StackInfo(
                pid=os.getpid(),
                data_dir=str(data_dir),
                api_url=self._api_url(),
                kafka_bootstrap=bootstrap,
                topic_prefix=s.topic_prefix,
                # Only the embedded server's URLs (DEV passwords); a database given by the
                # environment keeps its real password there.
                database_url=database_url if self._embedded_pg_port else None,
                migrate_database_url=migrate_url if self._embedded_pg_port else None,
                database_from_environment=self._embedded_pg_port is None,
            ),
        )
        self._banner(source)

    async def _postgres(self, data_dir: Path) -> tuple[str, str]:
        """The services' URL and the owner's (for migrations)."""
        if self.settings.database_url:
            url = self.settings.database_url
            migrate_url = self.settings.migrate_database_url or url
            for setting, target in (
                ("CARECOORD_DATABASE_URL", url),
                ("CARECOORD_MIGRATE_DATABASE_URL", migrate_url),
            ):
                try:
                    pool = await db.create_pool(target, min_size=1, max_size=1)
                    await pool.close()
                except db.DatabaseUnavailable as exc:
                    raise StartupError(
                        f"cannot reach PostgreSQL at {redact_url(target)} ({exc}): check "
                        f"{setting}, or unset CARECOORD_DATABASE_URL to use the embedded server"
                    ) from exc
            self.say(f"  ✓ PostgreSQL   {redact_url(url)}")
            return url, migrate_url
        pgdata = data_dir / "postgres"
        pid_file = pgdata / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                raise StartupError(
                    f"the PostgreSQL data in {pgdata} is in use by another server (pid {pid}): "
                    "stop the other `carecoord up`, or set CARECOORD_DATA_DIR to another folder"
                )
        pg = embedded.EmbeddedPostgres(pgdata, embedded.free_port())
        fresh = pg.initdb()
        self._launch(pg.spec(log_file=data_dir / "postgres.log"))
        await self._until(lambda: self._pg_ready(pg.dsn), 30, "the embedded PostgreSQL")
        self._embedded_pg_port = pg.port
        kept = "new cluster" if fresh else "existing data kept"
        self.say(f"  ✓ PostgreSQL   embedded, 127.0.0.1:{pg.port}, data in {pgdata} ({kept})")
        return await self._roles(pg.dsn, data_dir)

    async def _roles(self, superuser_dsn: str, data_dir: Path) -> tuple[str, str]:
        """On the embedded server, as its superuser: the owner role that migrates and the
        services' role that owns nothing (their DEV passwords in the data directory)."""
        owner_password, app_password, self._db_passwords = db_passwords(
            self.settings.model_copy(update={"data_dir": data_dir}), create=True
        )
        conn = await asyncpg.connect(superuser_dsn)
        try:
            await db_roles.create_roles(
                conn, owner_password=owner_password, app_password=app_password
            )
            adopted = await db_roles.prepare_database(conn)
        except asyncpg.PostgresError as exc:
            raise StartupError(f"could not set up the database roles: {exc}") from exc
        finally:
            await conn.close()
        handed = f"; {adopted} object(s) handed to the owner" if adopted else ""
        self.say(
            f"  ✓ roles        {db_roles.OWNER_ROLE} migrates, {db_roles.APP_ROLE} runs the "
            f"services (owns nothing){handed}"
        )
        return (
            db_roles.with_role(superuser_dsn, db_roles.APP_ROLE, app_password),
            db_roles.with_role(superuser_dsn, db_roles.OWNER_ROLE, owner_password),
        )

    async def _kafka(self, data_dir: Path) -> str:
        if self.settings.kafka_bootstrap:
            try:
                await kafka.ping(self.settings, seconds=5)
            except kafka.BrokerUnavailable as exc:
                raise StartupError(
                    f"cannot reach the Kafka broker at {self.settings.kafka_bootstrap} ({exc}): "
                    "check CARECOORD_KAFKA_BOOTSTRAP, or unset it to use the embedded broker"
                ) from exc
            self.say(f"  ✓ Kafka        {self.settings.kafka_bootstrap}")
            return self.settings.kafka_bootstrap
        if self.settings.kafka_security_protocol != "PLAINTEXT":
            raise StartupError(
                f"CARECOORD_KAFKA_SECURITY_PROTOCOL={self.settings.kafka_security_protocol} "
                "needs a broker that speaks it: set CARECOORD_KAFKA_BOOTSTRAP (the embedded "
                "broker speaks PLAINTEXT only)"
            )
        port = embedded.free_port()
        self._launch(embedded.tansu_spec(port, log_file=data_dir / "kafka.log"))
        probe = self.settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
        await self._until(lambda: self._kafka_ready(probe), 30, "the embedded Kafka broker")
        self.say(f"  ✓ Kafka        embedded Tansu broker, 127.0.0.1:{port} (memory only)")
        return f"127.0.0.1:{port}"

    async def _migrate(self, settings: Settings) -> None:
        url = settings.migrate_database_url or settings.database_url
        assert url is not None
        pool = await db.create_pool(url, min_size=1, max_size=1)
        try:
            applied = await db.migrate(pool, self.settings.migrations_dir)
        except db.MigrationError as exc:
            raise StartupError(str(exc)) from exc
        finally:
            await pool.close()
        self.say(f"  ✓ migrations   {len(applied)} applied")

    async def _check_services_role(self, url: str) -> None:
        why = await db_roles.services_role_risk(url)
        if why is not None:
            self.say(f"  ! WARNING      {why}")

    @staticmethod
    async def _pg_ready(dsn: str) -> bool:
        try:
            pool = await db.create_pool(dsn, min_size=1, max_size=1)
        except db.DatabaseUnavailable:
            return False
        await pool.close()
        return True

    @staticmethod
    async def _kafka_ready(settings: Settings) -> bool:
        host, _, port = (settings.kafka_bootstrap or "").rpartition(":")
        if not embedded.port_in_use(int(port), host):
            return False  # not listening yet: no need for a client to log a refusal
        try:
            await kafka.ping(settings, seconds=1)
        except kafka.BrokerUnavailable:
            return False
        return True

    async def _until(self, check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await check():
                return
            self._reap_failed_start(what)
            await asyncio.sleep(0.2)
        raise StartupError(f"{what} did not become ready within {seconds:.0f} s")

    def _reap_failed_start(self, what: str) -> None:
        for child in self._children:
            if child.proc is not None and child.proc.poll() is not None:
                log = f" (see {child.spec.log_file})" if child.spec.log_file else ""
                raise StartupError(
                    f"{what} exited with code {child.proc.returncode} while starting{log}"
                )

    async def _wait_for_api(self, stop: asyncio.Event) -> None:
        s = self.settings
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stop.is_set():
            if await _http_status(s.api_host, s.api_port, "/healthz") == 200:
                self.say(f"  ✓ api          healthy on http://{s.api_host}:{s.api_port}")
                return
            await asyncio.sleep(0.3)
        if not stop.is_set():
            raise StartupError("the API did not report healthy within 60 s (see its log above)")

    def _api_url(self) -> str:
        s = self.settings
        # A stack listening on every address is reached on loopback from this machine.
        host = "127.0.0.1" if s.api_host in ("", "0.0.0.0", "::") else s.api_host
        return f"http://{host}:{s.api_port}"

    def _banner(self, secret_source: str) -> None:
        s = self.settings
        base = f"http://{s.api_host}:{s.api_port}"
        lines = [
            "",
            "carecoord is up.",
            f"  GraphQL   {base}/graphql   (GraphiQL in a browser)",
            f"  health    {base}/healthz   metrics {base}/metrics",
        ]
        if self._embedded_pg_port is not None:
            lines.append(
                f"  database  psql postgresql://postgres@127.0.0.1:{self._embedded_pg_port}"
                "/postgres   (embedded; the superuser, local logins only)"
            )
        lines += [
            "  token     .venv/bin/carecoord token --sub u-1 --name 'Dr. Example'"
            " [--role compliance_officer]",
            "  demo      .venv/bin/carecoord demo   (a demo team; prints board URLs)",
        ]
        if self._stack_file is not None:
            lines.append(
                f"  stack     {self._stack_file} (0600): the operator commands of another"
                " terminal find this stack there"
            )
        if secret_source.startswith("DEV"):
            lines.append(f"  DEV ONLY  JWT {secret_source}; set CARECOORD_JWT_SECRET for real use")
        if self._audit_keys.startswith("DEV"):
            lines.append(
                f"  DEV ONLY  audit keys in the {self._audit_keys}; set CARECOORD_AUDIT_KEYS,"
                " CARECOORD_AUDIT_INDEX_KEY, CARECOORD_AUDIT_SIGNING_KEY (the worker) and"
                " CARECOORD_AUDIT_PUBLIC_KEY (the API) for real use"
            )
        if self._db_passwords:
            lines.append(
                f"  DEV ONLY  database passwords of {db_roles.OWNER_ROLE} and "
                f"{db_roles.APP_ROLE} in the {self._db_passwords}"
            )
        if self._pipeline_keys.startswith("DEV"):
            lines.append(
                f"  DEV ONLY  pipeline key in the {self._pipeline_keys};"
                " set CARECOORD_PIPELINE_KEYS for real use"
            )
        witness = s.witness_state or s.data_dir / "witness-state.json"
        lines.append(
            f"  witness   checks every chain's newest checkpoint every "
            f"{s.witness_every_seconds:g} s; state in {witness}"
        )
        lines.append("  Ctrl-C stops everything.")
        self.say("\n".join(lines))

    # -- supervision ------------------------------------------------------------------

    def _launch(self, spec: embedded.ChildSpec) -> Child:
        child = Child(spec=spec)
        self._children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.proc = embedded.spawn(child.spec, extra_env=self._env)
        child.started_at = time.monotonic()
        child.restart_at = None

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for child in self._children:
                assert child.proc is not None
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self._spawn(child)
                        self.say(f"  ↻ {child.spec.name} restarted (pid {child.proc.pid})")
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                if now - child.started_at > 30:
                    child.backoff = 1.0
                child.restarts += 1
                child.restart_at = now + child.backoff
                self.say(
                    f"  ✗ {child.spec.name} exited with code {code}; restarting in "
                    f"{child.backoff:.0f} s (restart #{child.restarts})"
                )
                child.backoff = min(child.backoff * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        self.say("carecoord up: stopping…")

    def _stop_all(self) -> None:
        # Reverse start order: the API and workers first, the database last.
        for child in reversed(self._children):
            if child.proc is not None and child.proc.poll() is None:
                embedded.stop(child.proc, child.spec.stop_signal)
        if self._children:
            self.say("carecoord up: stopped.")


async def _http_status(host: str, port: int, path: str) -> int | None:
    try:
        async with asyncio.timeout(3):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
            writer.close()
            await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    try:
        return int(status_line.split()[1])
    except (IndexError, ValueError):
        return None
