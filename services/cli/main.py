"""The `carecoord` command: up, token, demo, migrate, rebuild, audit, and what `up` supervises."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from services.cli.audit import audit_app
from services.cli.commandline import fail, need, stack_settings, warn_if_owner, with_database
from services.cli.export import export_app
from services.settings import Settings, get_settings

app = typer.Typer(
    name="carecoord",
    help="carecoord: event-sourced care coordination for multidisciplinary teams.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks print local variables, which may hold secrets or patient data.
    pretty_exceptions_enable=False,
)
app.add_typer(audit_app, name="audit")
app.add_typer(export_app, name="export")


@app.command()
def up() -> None:
    """Start and supervise the whole stack on this machine (Ctrl-C stops it)."""
    from services.common.embedded import die_with_parent
    from services.common.log import configure_logging
    from services.supervisor import Supervisor

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Started by `make up`, a SIGTERM may reach make rather than us: stop cleanly with it.
    die_with_parent(signal.SIGTERM)
    print(f"carecoord up: starting (data in {settings.data_dir.resolve()})", flush=True)
    raise typer.Exit(code=asyncio.run(Supervisor(settings).run()))


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="User id (the token's sub claim).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    role: Annotated[
        list[str] | None,
        typer.Option(help="Global role, e.g. compliance_officer or admin; repeatable."),
    ] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1)] = 8 * 3600,
) -> None:
    """Print a development bearer token signed with the stack's secret."""
    from services.common.auth import mint_token
    from services.common.dev_secrets import jwt_secret

    if not sub.strip() or not name.strip():
        raise fail("--sub and --name must not be empty")
    settings = get_settings()
    secret, _source = jwt_secret(settings)
    if secret is None:
        raise fail(
            "no JWT secret: set CARECOORD_JWT_SECRET, or run `make up` once so it generates "
            f"a dev secret in {settings.data_dir}"
        )
    try:
        token = mint_token(
            secret=secret,
            sub=sub,
            name=name,
            roles=role or [],
            ttl_seconds=ttl,
            max_lifetime=settings.token_max_lifetime_seconds,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(token)


@app.command()
def demo(
    api_url: Annotated[
        str | None,
        typer.Option(
            help="The running API's URL (default: from CARECOORD_API_HOST and "
            "CARECOORD_API_PORT, http://127.0.0.1:8000 unless set)."
        ),
    ] = None,
) -> None:
    """Seed a fictional care team (patient, care plan, huddle) through the GraphQL API of
    a running stack, and print board URLs with DEV ONLY tokens."""
    from services.common.dev_secrets import jwt_secret
    from services.demo import DemoError, seed
    from services.demo.report import report

    settings = get_settings()
    if api_url is None:
        settings = _stack_api(settings)
        # A stack listening on every address is reached on loopback from here.
        host = "127.0.0.1" if settings.api_host in ("", "0.0.0.0", "::") else settings.api_host
        api_url = f"http://{host}:{settings.api_port}"
    secret, _source = jwt_secret(settings)
    if secret is None:
        raise fail(
            "no JWT secret: set CARECOORD_JWT_SECRET, or run `make up` once so it generates "
            f"a dev secret in {settings.data_dir}"
        )
    try:
        made = asyncio.run(seed(api_url, secret=secret))
    except DemoError as exc:
        raise fail(f"demo: {exc}") from exc
    typer.echo(report(made))


def _stack_api(settings: Settings) -> Settings:
    """The API of the running stack's file, unless the environment names one."""
    from services.common import stack_file

    resolved = stack_file.resolve(settings)
    if not {"api_host", "api_port"} & set(resolved.used):
        return settings
    s = resolved.settings
    typer.echo(
        f"carecoord: using the stack `carecoord up` runs ({resolved.path}): "
        f"API http://{s.api_host}:{s.api_port}",
        err=True,
    )
    return s


@app.command()
def migrate() -> None:
    """Apply the database migrations not applied yet."""
    from services.common import db

    settings = stack_settings()
    if not settings.migrate_database_url:
        need(settings, "database")
        typer.echo(
            "carecoord: CARECOORD_MIGRATE_DATABASE_URL is not set: migrating as the role of "
            "CARECOORD_DATABASE_URL, which must then own the schema (and the services with it)",
            err=True,
        )
    applied = with_database(
        settings,
        lambda pool: db.migrate(pool, settings.migrations_dir),
        url=settings.migrate_database_url,
    )
    typer.echo(f"{len(applied)} migration(s) applied: {', '.join(applied) or 'none'}")


@app.command()
def rebuild(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Rebuild into temporary tables and compare with the live boards; "
            "change nothing; exit 1 on any difference.",
        ),
    ] = False,
) -> None:
    """Drop the board read models and rebuild them from the event store."""
    from services.tasks import rebuild as boards

    settings = stack_settings()
    need(settings, "database")

    # As the services' role, on a migrated database (`carecoord migrate` comes first).
    async def work(pool: Any) -> boards.Rebuilt | boards.Checked:
        return await (boards.check(pool) if check else boards.rebuild(pool))

    result = with_database(settings, work)
    rebuilt = result.rebuilt if isinstance(result, boards.Checked) else result
    rate = rebuilt.events / rebuilt.seconds if rebuilt.seconds else 0.0
    typer.echo(
        f"{'checked' if check else 'rebuilt'} the boards of {rebuilt.teams} team(s) from "
        f"{rebuilt.events} event(s) in {rebuilt.seconds:.2f} s ({rate:,.0f} events/s)"
    )
    for position, why in rebuilt.refused:
        typer.echo(f"  event at position {position} not applied: {why}")
    if isinstance(result, boards.Checked):
        if result.behind:
            typer.echo(f"  the live boards have {result.behind} event(s) still to apply")
        for table, (count, ids) in result.differences.items():
            more = f" (first {len(ids)})" if count > len(ids) else ""
            typer.echo(f"  {table}: {count} row(s) differ{more}: {', '.join(ids)}")
        if not result.ok:
            typer.echo("DIFFERENT: the live boards do not match a rebuild", err=True)
            raise typer.Exit(code=1)
        typer.echo("OK: the live boards match a rebuild")


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: a smoke run of a minute or two.")
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write every figure to this JSON file.", dir_okay=False),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this step (and the steps it needs); repeatable. Steps: pg, kafka, "
            "eventsourcing, append, relay, faust, graphql, stack, rebuild, signals, subscribers, "
            "audit, checkpoints, proofs, audit-sink."
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=20,
            help="Runs, each on parts started afresh; each figure is their median, shown "
            "with its min-max (ratios computed within each run). Default: 3, or 1 with --quick.",
        ),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            help="An earlier run's --json file: print today's figures beside it.",
            dir_okay=False,
        ),
    ] = None,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="Instead of the steps: how appends, the read models, a board, an agenda "
            "and audit verify cost grow from 10k to 1M events and 100 to 10,000 teams.",
        ),
    ] = False,
) -> None:
    """Measure every hot path beside the raw limit of its parts, on an embedded stack it
    starts (or on CARECOORD_DATABASE_URL / CARECOORD_KAFKA_BOOTSTRAP)."""
    from rich.console import Console

    from services.bench.harness import load_earlier
    from services.bench.parts import PartsUnavailable
    from services.bench.run import NAMES
    from services.bench.run import bench as run_bench

    if unknown := sorted(set(only or []) - set(NAMES)):
        raise fail(f"--only {', '.join(unknown)}: no such step (steps: {', '.join(NAMES)})")
    if json_path is not None and not json_path.resolve().parent.is_dir():
        raise fail(f"--json {json_path}: the folder {json_path.resolve().parent} does not exist")
    if scale:
        if only or compare is not None or repeat is not None:
            raise fail("--scale runs on its own: give no --only, --compare or --repeat")
        _bench_scale(quick=quick, json_path=json_path)
        return
    earlier = None
    if compare is not None:
        try:  # before the run: a wrong file found after half an hour of measuring helps nobody
            earlier = (compare, load_earlier(compare))
        except ValueError as exc:
            raise fail(f"--compare {exc}") from exc
    runs = repeat if repeat is not None else (1 if quick else 3)
    try:
        report = run_bench(
            quick=quick,
            json_path=json_path,
            console=Console(),
            only=only,
            repeat=runs,
            earlier=earlier,
        )
    except PartsUnavailable as exc:
        raise fail(str(exc)) from exc
    if not report.complete:
        raise typer.Exit(code=1)


def _bench_scale(*, quick: bool, json_path: Path | None) -> None:
    import orjson
    from rich.console import Console

    from services.bench import scale
    from services.bench.parts import PartsUnavailable
    from services.common.log import configure_logging

    configure_logging("warning", "console")
    console = Console()
    try:
        scaled = scale.scale(quick=quick, console=console)
    except PartsUnavailable as exc:
        raise fail(str(exc)) from exc
    console.print(scale.table(scaled.events, "cost as events grow (x: over the first stage)"))
    console.print(scale.table(scaled.teams, "cost as teams grow (x: over the first stage)"))
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(scale.to_json(scaled), option=orjson.OPT_INDENT_2))


@app.command(hidden=True)
def relay() -> None:
    """Run the outbox relays (store -> care.events, audit outbox -> care.audit) until SIGTERM."""
    from services.audit.relay import AuditRelay
    from services.common import db
    from services.common.log import configure_logging
    from services.common.outbox import OutboxRelay

    settings = get_settings()
    need(settings, "database")
    need(settings, "kafka")
    configure_logging(settings.log_level, settings.log_format)
    warn_if_owner(settings, "relay")

    async def main() -> None:
        assert settings.database_url is not None
        pool = await db.create_pool(settings.database_url, min_size=2, max_size=5)
        stop = _stop_on_signals()
        try:
            # Either failing ends the process (the supervisor restarts it), not one alone.
            async with asyncio.TaskGroup() as relays:
                relays.create_task(OutboxRelay(settings=settings, pool=pool).run(stop))
                relays.create_task(AuditRelay(settings=settings, pool=pool).run(stop))
        finally:
            await pool.close()

    asyncio.run(main())


@app.command(hidden=True)
def api() -> None:
    """Serve the API with uvicorn until SIGTERM."""
    import uvicorn

    from services.api.http_protocol import HttpProtocol
    from services.api.websocket import WebSocketProtocol
    from services.common.log import configure_logging

    # Checked before the settings are read, so the API never holds the key, not even as a
    # setting: whoever takes over an API process could otherwise sign checkpoints.
    if "CARECOORD_AUDIT_SIGNING_KEY" in os.environ:
        raise fail(
            "CARECOORD_AUDIT_SIGNING_KEY is set in the API's environment: only the audit "
            "writer (the worker) may hold the signing key. Remove it from the API's "
            "environment; the API verifies checkpoints with CARECOORD_AUDIT_PUBLIC_KEY"
        )
    settings = get_settings()
    need(settings, "database")
    need(settings, "audit keys")
    configure_logging(settings.log_level, settings.log_format)
    warn_if_owner(settings, "api")
    uvicorn.run(
        "services.api.app:app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # A WebSocket message is held to the HTTP body limit (uvicorn's default: 16 MiB).
        ws_max_size=settings.max_body_bytes,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=settings.ws_ping_seconds,
        # httptools' parser in C, its request head held to h11's bound (http_protocol.py).
        http=HttpProtocol,
        ws=WebSocketProtocol,
        # libuv's loop and transports in C: each held socket costs about 3.5 KB less
        # than with asyncio's own (15.5 against 19.0 KB a subscriber, measured).
        loop="uvloop",
    )


@app.command(hidden=True)
def worker() -> None:
    """Run the Faust stream processors until SIGTERM."""
    from services.common.log import configure_logging
    from services.common.worker import run_worker
    from services.worker import create_worker_app

    settings = get_settings()
    need(settings, "database")
    need(settings, "kafka")
    need(settings, "audit signing key")
    configure_logging(settings.log_level, settings.log_format)
    warn_if_owner(settings, "worker")
    run_worker(create_worker_app(settings))


@app.command("witness", hidden=True)
def witness_part() -> None:
    """Run the embedded stack's witness (state in the data dir) until SIGTERM."""
    from services.cli.witness import run

    raise typer.Exit(code=run(get_settings()))


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    try:
        app()
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # One line per wrong setting, named as it is set; never the value (it may be secret).
        prefix = str(Settings.model_config.get("env_prefix", ""))
        for error in exc.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            where = f"{prefix}{field}".upper() + ": " if field else ""
            typer.echo(f"carecoord: invalid setting: {where}{error['msg']}", err=True)
        raise SystemExit(2) from None
