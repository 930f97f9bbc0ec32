"""`carecoord bench --scale`: how the cost of the hot paths grows with the work held. Two
sweeps, each stage on the store as it stands: events (10k -> 100k -> 1M, 1,000 teams) and
teams (100 -> 1,000 -> 10,000, 100k events). At each stage: appends by 64 single-event
writers, the read models applying those events, a team's board and its huddle agenda
read, and, over the events sweep, verifying an audit log of as many entries."""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from services.audit import keys as audit_keys
from services.audit import store as audit_store
from services.audit.reports import AuditReader
from services.bench.audit import CHAINS, record
from services.bench.parts import started
from services.bench.store import task_life
from services.common import db
from services.common.event_store import EventStore, NewEvent, StreamWrite
from services.common.projection import Positioned, apply_batches
from services.settings import Settings
from services.tasks import store as boards
from services.tasks.agents import default_projections

WRITERS = 64
# A task's life: created, then moved this many times round TODO -> IN_PROGRESS -> DONE;
# most end DONE (2 or 5 moves), as a team's tasks do.
_MOVES = (0, 1, 2, 3, 4, 5)
_MOVE_WEIGHTS = (3, 3, 44, 2, 3, 45)
# Events are dated over the last year, so a board shows a team's open tasks and the ones
# closed in the last week, not its whole history.
_HISTORY_DAYS = 365
_BOARD_CLOSED_DAYS = 7
_FILL_WRITES = 500  # task lives per append_many while filling
_APPLY_BATCH = 500  # as the worker takes them
# Each stage's appends, applies and verifies are timed this many times: the median.
_ROUNDS = 5


@dataclass(frozen=True)
class ScaleSizes:
    events: tuple[int, ...]  # the events sweep's stages
    events_teams: int
    teams: tuple[int, ...]  # the teams sweep's stages
    teams_events: int
    probe_events: int  # appended (and applied) at each stage
    reads: int  # board and agenda reads at each stage


FULL = ScaleSizes(
    events=(10_000, 100_000, 1_000_000),
    events_teams=1_000,
    teams=(100, 1_000, 10_000),
    teams_events=100_000,
    probe_events=10_000,
    reads=300,
)
QUICK = ScaleSizes(
    events=(2_000, 10_000),
    events_teams=100,
    teams=(10, 100),
    teams_events=10_000,
    probe_events=1_000,
    reads=50,
)

COLUMNS = (
    ("append_events", "appends /s", "/s"),
    ("projection_events", "applied /s", "/s"),
    ("board_p50", "board p50", "ms"),
    ("board_tasks", "board tasks", ""),
    ("agenda_p50", "agenda p50", "ms"),
    ("audit_verify", "audit verify /s", "/s"),
)


@dataclass
class Stage:
    events: int
    teams: int
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class Scaled:
    events: list[Stage] = field(default_factory=list)
    teams: list[Stage] = field(default_factory=list)
    sizes: ScaleSizes = FULL
    seconds: float = 0.0


def _life(team_id: str, rng: random.Random, now: datetime) -> tuple[str, list[NewEvent]]:
    at = now - timedelta(days=rng.uniform(0, _HISTORY_DAYS))
    return task_life(team_id, moves=rng.choices(_MOVES, _MOVE_WEIGHTS)[0], at=at)


def _team(n: int) -> str:
    return f"scale-team-{n:05d}"


class _Store:
    """One database filled stage by stage: events appended in large group commits and
    applied to every read model, as the worker applies them, and audit entries."""

    def __init__(self, pool: asyncpg.Pool[Any], settings: Settings, teams: int) -> None:
        self.pool = pool
        self.settings = settings
        self.teams = teams
        self.store = EventStore(pool)
        self.projections = default_projections()
        self.rng = random.Random(22)  # noqa: S311 - sample data, not secrets
        self.now = datetime.now(UTC)
        self.events = 0
        self.audit_entries = 0
        self.keys = audit_keys.load(settings, create=True)

    def lives(self, count_events: int) -> list[tuple[str, list[NewEvent]]]:
        lives, made = [], 0
        while made < count_events:
            life = _life(_team(self.rng.randrange(self.teams)), self.rng, self.now)
            lives.append(life)
            made += len(life[1])
        return lives

    async def fill(self, events: int) -> None:
        """Append lives (each in one write) until the store holds `events`, applying them."""
        lives = self.lives(events - self.events)
        for i in range(0, len(lives), _FILL_WRITES):
            chunk = lives[i : i + _FILL_WRITES]
            writes = [StreamWrite(stream, 0, life) for stream, life in chunk]
            recorded = await self.store.append_many(writes)
            await self.apply([Positioned(r.position, r.envelope) for rs in recorded for r in rs])
        self.events = await self.store.head()

    async def apply(self, items: list[Positioned]) -> float:
        """Apply to every read model in the worker's batches; events a second."""
        began = time.perf_counter()
        for i in range(0, len(items), _APPLY_BATCH):
            await apply_batches(self.pool, self.projections, items[i : i + _APPLY_BATCH])
        return len(items) / (time.perf_counter() - began)

    async def probe(self, events: int) -> dict[str, float]:
        """New lives appended one event a call by 64 writers, then applied, in rounds:
        the median round's rates (one burst of the machine's noise moves one round)."""
        appends: list[float] = []
        applies: list[float] = []
        for _ in range(_ROUNDS):
            append, applied = await self._round(events // _ROUNDS)
            appends.append(append)
            applies.append(applied)
        self.events = await self.store.head()
        return {
            "append_events": statistics.median(appends),
            "projection_events": statistics.median(applies),
        }

    async def _round(self, events: int) -> tuple[float, float]:
        lives = self.lives(events)
        recorded: list[Positioned] = []

        async def writer(w: int) -> None:
            for stream, life in lives[w::WRITERS]:
                for version, event in enumerate(life):
                    [r] = await self.store.append(stream, version, [event])
                    recorded.append(Positioned(r.position, r.envelope))

        began = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        append = len(recorded) / (time.perf_counter() - began)
        recorded.sort(key=lambda p: p.position)
        return append, await self.apply(recorded)

    async def reads(self, count: int) -> dict[str, float]:
        """A random team's board, then its agenda, `count` times each, one connection."""
        today = self.now.date()
        board: list[float] = []
        agenda: list[float] = []
        sizes: list[int] = []
        async with self.pool.acquire() as conn:
            for _ in range(count):
                team = _team(self.rng.randrange(self.teams))
                began = time.perf_counter()
                tasks = await boards.team_tasks(
                    conn, team, closed_since=self.now - timedelta(days=_BOARD_CLOSED_DAYS)
                )
                board.append(time.perf_counter() - began)
                sizes.append(len(tasks))
                began = time.perf_counter()
                await boards.agenda(
                    conn, team, overdue_before=today, review_by=today + timedelta(days=7)
                )
                agenda.append(time.perf_counter() - began)
        return {
            "board_p50": statistics.median(board) * 1000,
            "board_tasks": statistics.median(sizes),
            "agenda_p50": statistics.median(agenda) * 1000,
        }

    async def audit(self, entries: int) -> dict[str, float]:
        """Audit entries appended (1,000 a batch over the chains) up to `entries`, then the
        whole log verified (the second of two verifies: see the audit step)."""
        async with self.pool.acquire() as conn:
            while self.audit_entries < entries:
                n = self.audit_entries
                batch = [record(n + i, self.now) for i in range(min(1000, entries - n))]
                await audit_store.append(
                    conn,
                    (n // 1000) % CHAINS,
                    batch,
                    self.keys,
                    role=self.settings.audit_db_role,
                    checkpoint_every=self.settings.audit_checkpoint_entries,
                    log_name=self.settings.audit_log_name,
                    now=self.now,
                )
                self.audit_entries += len(batch)
        reader = AuditReader.of(self.pool, self.keys, self.settings)
        rates = []
        for _ in range(_ROUNDS):
            began = time.perf_counter()
            result = await reader.verify()
            rates.append(result.entries_checked / (time.perf_counter() - began))
            if not result.ok:
                raise AssertionError(f"verify at {entries} entries: {result.first}")
        # The first verify of a process with threads also starts the verifying processes'
        # server (see the audit step): the later ones' median.
        return {"audit_verify": statistics.median(rates[1:])}


async def _sweep(
    settings: Settings,
    stages: list[tuple[int, int]],
    sizes: ScaleSizes,
    *,
    audit: bool,
    say: Callable[[str], None],
) -> list[Stage]:
    """Stages of (events, teams) on one database (teams fixed) that grows."""
    pool = await db.create_pool(settings.database_url or "", min_size=2, max_size=20)
    done: list[Stage] = []
    try:
        await db.migrate(pool)
        filled = _Store(pool, settings, stages[0][1])
        for events, teams in stages:
            filled.teams = teams
            await filled.fill(events - sizes.probe_events)
            # What autovacuum does after a table grows: without it, a probe right after a
            # large fill is timed on plans made for the empty tables.
            await pool.execute("ANALYZE")
            stage = Stage(events=events, teams=teams)
            stage.figures.update(await filled.probe(sizes.probe_events))
            stage.figures.update(await filled.reads(sizes.reads))
            if audit:
                stage.figures.update(await filled.audit(events))
            stage.events = filled.events
            say(_stage_line(stage))
            done.append(stage)
    finally:
        await pool.close()
    return done


def _stage_line(stage: Stage) -> str:
    shown = ", ".join(
        f"{label} {_fmt(stage.figures[key], unit)}"
        for key, label, unit in COLUMNS
        if key in stage.figures
    )
    return f"{stage.events:,} events, {stage.teams:,} teams: {shown}"


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f}{unit}"


def scale(*, quick: bool, console: Console) -> Scaled:
    """Both sweeps, each on parts started afresh (the teams sweep a database per stage,
    since the store never forgets an event)."""
    sizes = QUICK if quick else FULL
    out = Scaled(sizes=sizes)
    began = time.perf_counter()

    def run(stages: list[tuple[int, int]], audit: bool) -> list[Stage]:
        tmp = Path(tempfile.mkdtemp(prefix="carecoord-scale-"))
        try:
            with started(tmp) as parts:
                return asyncio.run(
                    _sweep(parts.settings, stages, sizes, audit=audit, say=console.print)
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    console.rule("events sweep")
    out.events = run([(e, sizes.events_teams) for e in sizes.events], True)
    console.rule("teams sweep")
    for teams in sizes.teams:
        out.teams += run([(sizes.teams_events, teams)], False)
    out.seconds = time.perf_counter() - began
    return out


def table(stages: list[Stage], title: str) -> Table:
    """Each stage's figures, and each beside the first stage's (x1.0: flat)."""
    shown = Table(title=title)
    shown.add_column("events", justify="right")
    shown.add_column("teams", justify="right")
    keys = [c for c in COLUMNS if any(c[0] in s.figures for s in stages)]
    for _, label, _ in keys:
        shown.add_column(label, justify="right")
    first = stages[0].figures if stages else {}
    for stage in stages:
        cells = []
        for key, _, unit in keys:
            value = stage.figures.get(key)
            if value is None:
                cells.append("-")
                continue
            base = first.get(key)
            ratio = f" (x{value / base:.1f})" if base and stage is not stages[0] else ""
            cells.append(_fmt(value, unit) + ratio)
        shown.add_row(f"{stage.events:,}", f"{stage.teams:,}", *cells)
    return shown


def to_json(scaled: Scaled) -> dict[str, Any]:
    return {
        "sizes": asdict(scaled.sizes),
        "seconds": scaled.seconds,
        "events_sweep": [asdict(s) for s in scaled.events],
        "teams_sweep": [asdict(s) for s in scaled.teams],
    }
