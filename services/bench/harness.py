"""What `carecoord bench` measures, in what order, and how the figures are shown and saved."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import statistics
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
    Key(
        "raw_kafka_hop_p50",
        "one message sent -> consumed (the fetch wait as the stack's), p50",
        "ms",
    ),
    Key("raw_kafka_hop_p99", "one message sent -> consumed, p99", "ms"),
    Key("eventsourcing_append", "eventsourcing library, one-event saves, 64 writers", "/s"),
    Key("append_events", "event store appends, one event a command, 64 writers", "/s", ">= 10,000"),
    Key("raw_faust_count", "Faust agent that only counts care.events", "/s"),
    Key("projection_events", "board projector applying care.events", "/s", ">= 5,000"),
    Key(
        "raw_graphql_cpu_ms",
        "uvicorn, starlette, strawberry: a bare mutation of one query, CPU a request",
        "ms",
    ),
    Key("raw_graphql_p50", "the bare mutation at the offered load, p50", "ms"),
    Key("raw_graphql_p99", "the bare mutation at the offered load, p99", "ms"),
    Key("command_p50", "GraphQL addGoal/moveTask at the offered load, p50", "ms"),
    Key("command_p99", "GraphQL addGoal/moveTask at the offered load, p99", "ms", "<= 50"),
    Key("command_api_cpu_ms", "API CPU per command at the offered load", "ms", "<= 1.5"),
    Key(
        "api_query_cpu_ms",
        "the API answering a query that reads nothing (me) at the same rate, CPU a request",
        "ms",
    ),
    Key(
        "api_idle_cpu_ms",
        "the API with nothing asked, CPU a second over the offered rate (what a command carries)",
        "ms",
    ),
    Key("commands", "commands answered", "/s"),
    Key("command_machine_cores", "cores the machine kept busy at the offered load", ""),
    Key("e2e_p50", "mutation sent -> boardChanged received, p50", "ms", "<= 20"),
    Key("e2e_p99", "mutation sent -> boardChanged received, p99", "ms", "<= 60"),
    Key("ryw_wait_p50", "mutation answered -> board(atLeast: its position) answered, p50", "ms"),
    Key("ryw_wait_p99", "mutation answered -> board(atLeast: its position) answered, p99", "ms"),
    Key(
        "audit_append",
        "audit records encrypted, chained, stored with their tree nodes, 4 chains side by side",
        "/s",
    ),
    Key(
        "raw_audit_copy",
        "PostgreSQL COPY of the same rows sealed beforehand, into the log's tables and indexes",
        "/s",
    ),
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
    # The most audit_append_over_copy can be with the log's tables and indexes as they are.
    Ratio("audit_copy_over_copy", "raw_audit_copy", "raw_pg_copy", 0.0),
    Ratio("audit_append_over_audit_copy", "audit_append", "raw_audit_copy", 0.0),
    # How many times the parts' own cost a command costs the API.
    Ratio("command_cpu_over_raw_graphql", "command_api_cpu_ms", "raw_graphql_cpu_ms", 0.0),
    # How much of a command's cost is the API's own on any request (its middlewares, the
    # sign-in, its extensions), before the command reads, decides or commits anything.
    Ratio("api_query_over_raw_graphql", "api_query_cpu_ms", "raw_graphql_cpu_ms", 0.0),
    # A change crosses the broker twice on its way to a push (care.events, then
    # care.board-updates): 2.0 is the floor.
    Ratio("e2e_over_kafka_hop", "e2e_p50", "raw_kafka_hop_p50", 0.0),
    Ratio("append_over_eventsourcing", "append_events", "eventsourcing_append", 20.0),
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
    # Measured on parts of its own, started afresh: what the steps before it left in the
    # broker and the database must not weigh on it (the embedded broker, memory only,
    # spends more CPU on each fetch the more it holds).
    alone: bool = False


@dataclass
class Report:
    """One run's figures; or, combined over repeated runs (`combine`), each key's median,
    its min-max (`spread`) and every run's figures (`runs`)."""

    figures: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    extras: Figures = field(default_factory=dict)
    runs: list[dict[str, float | None]] = field(default_factory=list)
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Combined: the median of the ratios each run computed within itself.
    combined_ratios: dict[str, float | None] | None = None
    # Combined: runs in which some figure was not measured.
    runs_incomplete: int = 0

    def ratios(self) -> dict[str, float | None]:
        if self.combined_ratios is not None:
            return dict(self.combined_ratios)
        out: dict[str, float | None] = {}
        for r in RATIOS:
            over, under = self.figures.get(r.over), self.figures.get(r.under)
            out[r.name] = over / under if over is not None and under else None
        return out

    @property
    def complete(self) -> bool:
        """Every figure of the steps that ran was measured (in every run)."""
        measured = all(value is not None for value in self.figures.values())
        return measured and self.runs_incomplete == 0


def combine(reports: list[Report]) -> Report:
    """Several runs as one report: each figure the median of the runs that measured it, with
    its min-max; each ratio computed within each run, then the median of those. A figure
    some run did not measure says in how many it was, and why not in the others."""
    if not reports:
        raise ValueError("no run to combine")
    out = Report(runs_incomplete=sum(1 for r in reports if not r.complete))
    count = len(reports)
    each = [{**r.figures, **r.ratios()} for r in reports]
    out.runs = each
    for key in dict.fromkeys(k for r in reports for k in r.figures):
        out.figures[key] = _median_of(out, key, [r.figures.get(key) for r in reports])
        measured = sum(1 for r in reports if r.figures.get(key) is not None)
        why = next((r.notes[key] for r in reports if key in r.notes), None)
        if why is not None:
            out.notes[key] = (
                why if measured == 0 else f"measured in {measured} of {count} runs; {why}"
            )
    out.combined_ratios = {
        ratio.name: _median_of(out, ratio.name, [run.get(ratio.name) for run in each])
        for ratio in RATIOS
    }
    for key in dict.fromkeys(k for r in reports for k in r.extras):
        values = [r.extras[key] for r in reports if key in r.extras]
        out.extras[key] = statistics.median(values)
    return out


def _median_of(report: Report, key: str, values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    if not measured:
        return None
    report.spread[key] = (min(measured), max(measured))
    return statistics.median(measured)


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


def merge(into: Report, other: Report) -> Report:
    """One run's report, from the reports of the parts it ran on (`Step.alone`)."""
    into.figures.update(other.figures)
    into.notes.update(other.notes)
    into.extras.update(other.extras)
    return into


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


_TARGET = re.compile(r"^(<=|>=)\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")


def verdict(target: str, value: float | None) -> bool | None:
    """Whether a figure meets its target (`<= 20`, `>= 100,000`); None when there is no
    figure or no target of that form (a target against another key is judged by its
    ratio)."""
    found = _TARGET.match(target.strip())
    if found is None or value is None:
        return None
    bound = float(found.group(2).replace(",", ""))
    return value <= bound if found.group(1) == "<=" else value >= bound


def _verdict_cell(met: bool | None) -> str:
    if met is None:
        return ""
    return "[green]met[/green]" if met else "[red]missed[/red]"


def _spread_cell(report: Report, name: str, unit: str) -> str:
    low_high = report.spread.get(name)
    if low_high is None:
        return "-"
    return f"{_fmt(low_high[0], unit)} - {_fmt(low_high[1], unit)}"


def _rows(report: Report) -> list[tuple[str, float | None, str, str, str]]:
    """(name, figure, unit, target, what) of every key and ratio the run has, in order."""
    rows = [
        (k.name, report.figures[k.name], k.unit, k.target, k.what)
        for k in KEYS
        if k.name in report.figures
    ]
    for r, (name, value) in zip(RATIOS, report.ratios().items(), strict=True):
        if r.over not in report.figures or r.under not in report.figures:
            continue
        target = f">= {r.target:g}" if r.target else ""
        rows.append((name, value, "", target, f"{r.over} / {r.under}"))
    return rows


def table(report: Report, title: str) -> Table:
    repeated = len(report.runs) > 1
    out = Table(title=title, title_justify="left")
    out.add_column("key", no_wrap=True, min_width=29)
    out.add_column("median" if repeated else "figure", justify="right", no_wrap=True, min_width=11)
    if repeated:
        out.add_column("min - max", justify="right", no_wrap=True)
    out.add_column("target", justify="right", no_wrap=True, min_width=10)
    out.add_column("verdict", no_wrap=True, min_width=7)
    out.add_column("what", no_wrap=True, overflow="ellipsis")
    for name, value, unit, target, what in _rows(report):
        cells = [name, _fmt(value, unit)]
        if repeated:
            cells.append(_spread_cell(report, name, unit))
        cells += [target, _verdict_cell(verdict(target, value)), what]
        out.add_row(*cells)
    return out


# How a key's change reads: a higher rate (and a higher ratio) is better, a longer time or
# more memory worse; a count (subscribers, records a change) is neither.
_HIGHER_IS_BETTER = {"/s": True, "ms": False, "MB": False, "KB": False}
# Within this much of the earlier figure, a change is noise on a shared machine (runs a
# minute apart differ by 5-10% here).
_NOISE = 0.10


def load_earlier(path: Path) -> dict[str, Any]:
    """An earlier run's JSON (`--json`), to compare with; ValueError saying what is wrong."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    known = {k.name for k in KEYS} | {r.name for r in RATIOS}
    if not isinstance(document, dict) or not known & set(document):
        raise ValueError(f"{path}: not a carecoord bench JSON (no figure of a known key)")
    return document


def _earlier_figure(earlier: dict[str, Any], name: str) -> float | None:
    value = earlier.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def change(
    name: str, unit: str, now: float | None, before: float | None, overlap: bool = False
) -> tuple[str, str]:
    """(today over earlier, better | worse | same) of one key; blanks where either is
    missing. `same` within 10%, or where the two runs' min-max overlap."""
    if now is None or before is None or before == 0:
        return "", ""
    times = now / before
    higher = True if name in {r.name for r in RATIOS} else _HIGHER_IS_BETTER.get(unit)
    if higher is None:
        return f"x{times:.2f}", ""
    if overlap or abs(times - 1) <= _NOISE:
        return f"x{times:.2f}", "same"
    better = times > 1 if higher else times < 1
    return f"x{times:.2f}", "[green]better[/green]" if better else "[red]worse[/red]"


def compare_table(report: Report, earlier: dict[str, Any], title: str) -> Table:
    """Today's run beside an earlier one: each key's figure, the earlier figure, and the
    change (today over earlier, judged better or worse by the key's unit)."""
    out = Table(title=title, title_justify="left")
    out.add_column("key", no_wrap=True, min_width=29)
    out.add_column("today", justify="right", no_wrap=True, min_width=11)
    out.add_column("earlier", justify="right", no_wrap=True, min_width=11)
    out.add_column("change", justify="right", no_wrap=True)
    out.add_column("", no_wrap=True)
    found = earlier.get("spread")
    earlier_spread: dict[str, Any] = found if isinstance(found, dict) else {}
    for name, value, unit, _target, _what in _rows(report):
        before = _earlier_figure(earlier, name)
        overlap = _overlap(report.spread.get(name), earlier_spread.get(name))
        times, word = change(name, unit, value, before, overlap)
        out.add_row(name, _fmt(value, unit), _fmt(before, unit), times, word)
    return out


def _overlap(now: tuple[float, float] | None, before: object) -> bool:
    if now is None or not isinstance(before, list) or len(before) != 2:
        return False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in before):
        return False
    return bool(now[0] <= before[1] and before[0] <= now[1])


def to_json(
    report: Report, *, quick: bool, sizes: Sizes, parts: dict[str, str], seconds: float
) -> bytes:
    document: dict[str, Any] = {
        **report.figures,
        **report.ratios(),
        "extras": report.extras,
        "notes": report.notes,
        "repeats": max(1, len(report.runs)),
        "spread": {key: list(low_high) for key, low_high in report.spread.items()},
        "runs": report.runs,
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
