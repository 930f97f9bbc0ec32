"""What `carecoord bench` measures, in what order, and how the figures are shown and saved."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.common import db
from services.settings import Settings

Figures = dict[str, float]


@dataclass(frozen=True)
class Key:
    name: str
    what: str
    unit: str  # "/s", "ms" or "MB"
    target: str = ""


KEYS = (
    Key("raw_pg_copy", "PostgreSQL COPY, 1 KB rows", "/s"),
    Key("raw_pg_commit", "PostgreSQL one-row transactions, 16 writers", "/s"),
    Key("raw_kafka_produce", "aiokafka produce, 1 KB values, acks=all", "/s"),
    Key("raw_kafka_consume", "aiokafka consume, 1 KB values", "/s"),
    Key("eventsourcing_append", "eventsourcing library, one-event saves, 16 writers", "/s"),
    Key("append_events", "event store appends, one event a command, 16 writers", "/s", ">= 5x lib"),
    Key("raw_faust_count", "Faust agent that only counts care.events", "/s"),
    Key("projection_events", "board projector applying care.events", "/s", ">= 5,000"),
    Key("command_p50", "GraphQL addGoal/moveTask at the offered load, p50", "ms"),
    Key("command_p99", "GraphQL addGoal/moveTask at the offered load, p99", "ms", "<= 20"),
    Key("commands", "commands answered", "/s"),
    Key("e2e_p50", "mutation sent -> boardChanged received, p50", "ms", "<= 50"),
    Key("e2e_p99", "mutation sent -> boardChanged received, p99", "ms", "<= 200"),
    Key("ryw_wait_p50", "mutation answered -> board(atLeast: its position) answered, p50", "ms"),
    Key("ryw_wait_p99", "mutation answered -> board(atLeast: its position) answered, p99", "ms"),
    Key("audit_append", "audit records encrypted, chained, stored with their tree nodes", "/s"),
    Key(
        "audit_verify",
        "audit entries verified, with their tree nodes and notes",
        "/s",
        ">= 100,000",
    ),
    Key(
        "audit_checkpoint_lag_p99",
        "entry committed -> a signed checkpoint covers it, 2,000/s offered, p99",
        "ms",
        "<= 1,000",
    ),
    Key("audit_checkpoints_per_chain", "checkpoints signed per chain at 2,000/s offered", "/s"),
    Key("audit_inclusion_p50", "store inclusion proof, p50", "ms"),
    Key("audit_inclusion_p99", "store inclusion proof, p99", "ms", "<= 5"),
    Key("audit_consistency_p50", "store consistency proof, p50", "ms"),
    Key("audit_consistency_p99", "store consistency proof, p99", "ms", "<= 5"),
    Key("audit_outbox_p50", "read's access record committed to the audit outbox, p50", "ms"),
    Key("audit_outbox_p99", "read's access record committed to the audit outbox, p99", "ms"),
    Key("audit_kafka_p50", "read's access record acked by care.audit (old path), p50", "ms"),
    Key("audit_kafka_p99", "read's access record acked by care.audit (old path), p99", "ms"),
    Key("rebuild_events", "carecoord rebuild over the store", "/s", ">= 20,000"),
    Key(
        "signal_observations",
        "readings out of range -> signal tasks, one worker",
        "/s",
        ">= 1,000",
    ),
    Key("signal_push_p50", "recordObservation sent -> its signal task pushed, p50", "ms"),
    Key(
        "signal_push_p99",
        "recordObservation sent -> its signal task pushed, 50/s offered, p99",
        "ms",
        "<= 500",
    ),
    Key("subscribers", "boardChanged subscribers, each its own WebSocket, one API", ""),
    Key("subscribers_kb_each", "API resident memory per subscriber", "KB", "<= 20"),
    Key("subscribers_push_p50", "createTask sent -> each subscriber's push, p50", "ms"),
    Key(
        "subscribers_push_p99",
        "createTask sent -> each subscriber's push, 100/s over teams of 10, p99",
        "ms",
        "<= 250",
    ),
    Key("subscribers_records_per_change", "access records of pushes per change", ""),
    Key(
        "subscribers_sends_per_change",
        "durable hand-offs (outbox statements) of push records per change",
        "",
    ),
    Key(
        "subscribers_audit_messages_per_change",
        "messages on care.audit per change (the relay packs a patient's records due together)",
        "",
    ),
    Key("rss_api_mb", "API peak resident memory", "MB", "<= 250"),
    Key("rss_worker_mb", "Faust worker peak resident memory", "MB"),
)


@dataclass(frozen=True)
class Ratio:
    name: str
    over: str
    under: str
    target: float


RATIOS = (
    Ratio("projection_over_faust_count", "projection_events", "raw_faust_count", 0.7),
    Ratio("projection_over_kafka_consume", "projection_events", "raw_kafka_consume", 0.0),
    Ratio("audit_append_over_copy", "audit_append", "raw_pg_copy", 0.5),
    Ratio("append_over_eventsourcing", "append_events", "eventsourcing_append", 5.0),
    Ratio("signals_over_faust_count", "signal_observations", "raw_faust_count", 0.0),
)


@dataclass(frozen=True)
class Sizes:
    rows: int  # COPY rows and one-row transactions
    messages: int  # raw Kafka
    saves: int  # eventsourcing library
    appends: int  # event store: these events fill the store and care.events
    teams: int  # the appended events spread over this many teams' boards
    plans: int  # plans and tasks the command load works on
    command_seconds: float
    offered: int  # commands per second
    changes: int  # mutation -> boardChanged round trips
    audit_entries: int
    publishes: int  # access records published one at a time, per audit sink
    audit_lag_seconds: float = 3  # entries offered at 2,000/s to the audit writer
    audit_tree_leaves: int = 20_000  # the tree proofs are served from
    audit_proofs: int = 500  # proofs of each kind asked for
    observations: int = 20_000  # readings, all out of range, through one worker to tasks
    signal_plans: int = 200  # the monitoring plans they are spread over
    signal_teams: int = 20
    signal_push_plans: int = 100  # monitoring plans the timed readings go to, over the API
    signal_push_teams: int = 10  # whose boardChanged the bench follows
    signal_push_rate: int = 50  # readings per second offered
    signal_push_seconds: float = 20
    subscriber_teams: int = 1_000  # boardChanged subscribers: teams of subscribers_a_team
    subscribers_a_team: int = 10
    subscriber_changes: int = 100  # board changes per second offered, over the teams
    subscriber_seconds: float = 20


QUICK = Sizes(
    rows=5_000,
    messages=10_000,
    saves=1_000,
    appends=3_000,
    teams=200,
    plans=20,
    command_seconds=3,
    offered=200,
    changes=30,
    audit_entries=5_000,
    publishes=800,
    observations=3_000,
    signal_push_plans=20,
    signal_push_seconds=8,
    subscriber_teams=100,
    subscriber_seconds=5,
)
FULL = Sizes(
    rows=100_000,
    messages=100_000,
    saves=5_000,
    appends=60_000,
    teams=10_000,
    plans=100,
    command_seconds=20,
    offered=200,
    changes=300,
    audit_entries=100_000,
    audit_lag_seconds=20,
    audit_tree_leaves=1_000_000,
    audit_proofs=5_000,
    publishes=10_000,
)


class NotMeasured(Exception):
    """A capability the run cannot measure here; the message says why, in place of a figure."""


@dataclass
class Run:
    """What every step gets: the settings of the run's parts, a pool, the sizes, and a way to
    say how far it is."""

    settings: Settings
    pool: asyncpg.Pool[Any]
    sizes: Sizes
    tmp: Path
    advance: Callable[[str], None] = lambda _what: None
    # Figures a step leaves for a later one (what the store holds, say).
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str  # as `--only` takes it
    label: str
    keys: tuple[str, ...]
    measure: Callable[[Run], Awaitable[Figures]]
    needs: tuple[str, ...] = ()


@dataclass
class Report:
    figures: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    extras: Figures = field(default_factory=dict)

    def ratios(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for r in RATIOS:
            over, under = self.figures.get(r.over), self.figures.get(r.under)
            out[r.name] = over / under if over is not None and under else None
        return out

    @property
    def complete(self) -> bool:
        """Every figure of the steps that ran was measured."""
        return all(value is not None for value in self.figures.values())


async def run_steps(
    settings: Settings, sizes: Sizes, tmp: Path, steps: list[Step], console: Console
) -> Report:
    report = Report()
    pool = await db.create_pool(settings.database_url or "", min_size=2, max_size=20)
    try:
        await db.migrate(pool)
        columns = (
            TextColumn("{task.description:<44}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            bar = progress.add_task("starting", total=len(steps))

            def advance(what: str) -> None:
                progress.update(bar, description=what)

            run = Run(settings=settings, pool=pool, sizes=sizes, tmp=tmp, advance=advance)
            for step in steps:
                label, keys = step.label, step.keys
                advance(label)
                started = time.perf_counter()
                try:
                    figures = await step.measure(run)
                except NotMeasured as exc:
                    _missing(report, keys, f"not measured: {exc}")
                except Exception as exc:  # one broken part must not hide the others' figures
                    _missing(report, keys, f"failed: {type(exc).__name__}: {exc}"[:500])
                else:
                    for key, value in figures.items():
                        (report.figures if key in keys else report.extras)[key] = value
                    _missing(report, [k for k in keys if k not in figures], "not reported")
                took = time.perf_counter() - started
                progress.console.print(_step_line(label, keys, report, took))
                progress.advance(bar)
    finally:
        await pool.close()
    return report


def _missing(report: Report, keys: Any, why: str) -> None:
    for key in keys:
        report.figures[key] = None
        report.notes[key] = why


def _step_line(label: str, keys: tuple[str, ...], report: Report, took: float) -> str:
    shown = []
    for key in keys:
        value = report.figures.get(key)
        shown.append(f"{key} {_fmt(value, _unit(key))}" if value is not None else f"{key} -")
    return f"[dim]{took:6.1f} s[/dim]  {label}: " + ", ".join(shown)


def _unit(name: str) -> str:
    return next((k.unit for k in KEYS if k.name == name), "")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "KB":
        return f"{value:,.1f} KB"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(report: Report, title: str) -> Table:
    out = Table(title=title, title_justify="left")
    out.add_column("key", no_wrap=True, min_width=29)
    out.add_column("figure", justify="right", no_wrap=True, min_width=11)
    out.add_column("target", justify="right", no_wrap=True, min_width=10)
    out.add_column("what", no_wrap=True, overflow="ellipsis")
    for k in KEYS:
        if k.name in report.figures:
            out.add_row(k.name, _fmt(report.figures[k.name], k.unit), k.target, k.what)
    for r, (name, value) in zip(RATIOS, report.ratios().items(), strict=True):
        if r.over not in report.figures or r.under not in report.figures:
            continue
        target = f">= {r.target:g}" if r.target else ""
        out.add_row(name, _fmt(value, ""), target, f"{r.over} / {r.under}")
    return out


def to_json(
    report: Report, *, quick: bool, sizes: Sizes, parts: dict[str, str], seconds: float
) -> bytes:
    document: dict[str, Any] = {
        **report.figures,
        **report.ratios(),
        "extras": report.extras,
        "notes": report.notes,
        "quick": quick,
        "sizes": asdict(sizes),
        "parts": parts,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 1),
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {seconds:.0f} s")
        await asyncio.sleep(0.02)


async def open_loop(
    count: int, rate: float, one: Callable[[int, float], Coroutine[Any, Any, None]]
) -> float:
    """Start `one(n, due)` for n in 0..count-1 on a fixed schedule of `rate` a second,
    whatever the answers do (an open loop: a slow system cannot hide its queue), each
    given the perf_counter time it was due; return the seconds until all of them ended."""
    started = time.perf_counter()
    pending = []
    for n in range(count):
        due = started + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        pending.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*pending)
    return time.perf_counter() - started
