"""Care signals: readings through the signal processor to signal tasks on the board, with
one worker; and a reading recorded over GraphQL -> the board push of its signal task.

Throughput: the store is pre-filled (teams, patients, ACTIVE care plans each with a glucose
monitoring plan, then the readings, every one of them out of range: the worst case, each
reading is a signal), the relay puts it on care.events, and one `carecoord worker` starts
on it. Measured from the first reading the "signals" projection applies to the moment every
reading is signalled (SignalRaised in the store, signal_outbox empty); then checked: one
open signal task per monitoring plan on the board, counting that plan's readings.

Latency: `carecoord up`, monitoring plans made over GraphQL, boardChanged followed for
their teams, and recordObservation sent at a fixed rate (an open loop); each reading is
timed from its mutation leaving to the push of its plan's task counting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from schemas.careplan import CarePlanCreated, MonitoringAdded, PlanStatusChanged
from schemas.common import Discipline, PlanStatus
from schemas.observation import ObservationSource
from schemas.patient import PatientEnrolled
from schemas.team import TeamCreated
from services.audit import keys as audit_keys
from services.bench.harness import Figures, Run, open_loop, percentile, wait_until
from services.bench.parts import environment, spawn, stop_process
from services.bench.stack import CommandFailed, Peaks, client_session, gql, up
from services.bench.ws import Socket, connect
from services.common.auth import mint_token
from services.common.dev_secrets import pipeline_keys
from services.common.event_store import EventStore, NewEvent, StreamWrite
from services.common.outbox import OutboxRelay
from services.plans.domain import observation
from services.plans.domain.observation import RecordObservation

GLUCOSE = "2339-0"
UNIT = "mg/dL"
HIGH = 180.0
CRITICAL_HIGH = 300.0
EVERY_DAYS = 7
ACTOR = "bench-lead"
# Writes a pre-fill append takes at once.
CHUNK = 500
# The polls of the store and read models while the worker works.
LOOK_SECONDS = 0.02

CREATE_TEAM = "mutation($name: String!) { createTeam(name: $name) { id } }"
ENROLL = """mutation($teamId: ID!, $mrn: String!, $name: String!, $birthDate: Date!) {
  enrollPatient(teamId: $teamId, mrn: $mrn, name: $name, birthDate: $birthDate) { id } }"""
CREATE_PLAN = """mutation($patientId: ID!, $title: String!) {
  createCarePlan(patientId: $patientId, title: $title) { id } }"""
ADD_MONITORING = """mutation($planId: ID!) {
  addMonitoring(planId: $planId, measureCode: "2339-0", everyDays: 7, unit: "mg/dL",
    high: 180, criticalHigh: 300, responsibleDiscipline: NURSE) { id } }"""
ACTIVATE = """mutation($planId: ID!) { setPlanStatus(planId: $planId, status: ACTIVE) { id } }"""
CREATE_TASK = """mutation($teamId: ID!, $title: String!) {
  createTask(teamId: $teamId, title: $title) { id } }"""
RECORD = """mutation($patientId: ID!, $value: Float!, $at: DateTime!) {
  recordObservation(patientId: $patientId, measureCode: "2339-0", value: $value,
    unit: "mg/dL", at: $at, source: DEVICE) { id } }"""
# With the task's signal count when the API has it; else the count is read from the title.
BOARD_CHANGED = """subscription($teamId: ID!) {
  boardChanged(teamId: $teamId) { task { id planId title source %s } } }"""
COUNTED = re.compile(r"\((\d+) signals\)$")


# --- the data ------------------------------------------------------------------------


@dataclass(frozen=True)
class Watched:
    """A patient with an ACTIVE care plan that monitors blood glucose."""

    team_id: str
    patient_id: str
    plan_id: str
    monitoring_id: str


def cohort(teams: int, plans: int) -> list[Watched]:
    """`plans` monitored patients spread round-robin over `teams` teams."""
    team_ids = [str(uuid.uuid4()) for _ in range(teams)]
    return [
        Watched(team_ids[n % teams], str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))
        for n in range(plans)
    ]


def out_of_range(n: int) -> float:
    """The n-th reading's value: above `HIGH`, a share of them at or above `CRITICAL_HIGH`
    (181..420 mg/dL, so about half OUT_OF_RANGE and half CRITICAL), every one a signal."""
    return 181.0 + (n * 37) % 240


def setup_writes(members: Sequence[Watched]) -> list[StreamWrite]:
    """The teams, the patients, and each one's care plan made ACTIVE with glucose monitoring
    (NURSE responsible, above 180 mg/dL out of range, 300 and over critical)."""
    writes = []
    for team in dict.fromkeys(m.team_id for m in members):
        created = TeamCreated(team_id=team, name="Bench team", lead_user_id=ACTOR, lead_name="Lead")
        writes.append(StreamWrite(f"team-{team}", 0, [_new(created, team)]))
    for n, m in enumerate(members):
        enrolled = PatientEnrolled(
            patient_id=m.patient_id,
            team_id=m.team_id,
            mrn=f"S{n:07d}",
            name="Bench Patient",
            birth_date=date(1961, 5, 17),
        )
        plan = [
            CarePlanCreated(
                plan_id=m.plan_id, patient_id=m.patient_id, team_id=m.team_id, title="Diabetes"
            ),
            PlanStatusChanged(
                plan_id=m.plan_id, status=PlanStatus.ACTIVE, previous=PlanStatus.DRAFT
            ),
            MonitoringAdded(
                plan_id=m.plan_id,
                monitoring_id=m.monitoring_id,
                measure_code=GLUCOSE,
                every_days=EVERY_DAYS,
                unit=UNIT,
                high=HIGH,
                critical_high=CRITICAL_HIGH,
                responsible_discipline=Discipline.NURSE,
            ),
        ]
        writes.append(StreamWrite(f"patient-{m.patient_id}", 0, [_new(enrolled, m.team_id, m)]))
        writes.append(
            StreamWrite(f"careplan-{m.plan_id}", 0, [_new(e, m.team_id, m) for e in plan])
        )
    return writes


def reading_writes(members: Sequence[Watched], count: int, now: datetime) -> list[StreamWrite]:
    """`count` glucose readings spread round-robin over the members, a second apart and
    ending at `now`, each its own observation stream, as recordObservation writes them."""
    writes = []
    for n in range(count):
        m = members[n % len(members)]
        observation_id = str(uuid.uuid4())
        command = RecordObservation(
            observation_id=observation_id,
            patient_id=m.patient_id,
            measure_code=GLUCOSE,
            value=out_of_range(n),
            unit=UNIT,
            at=now - timedelta(seconds=count - n),
            source=ObservationSource.DEVICE,
            recorded_by=ACTOR,
        )
        events = observation.decide(command, None, now)
        writes.append(
            StreamWrite(f"observation-{observation_id}", 0, [_new(e, m.team_id, m) for e in events])
        )
    return writes


def _new(event: Any, team_id: str, member: Watched | None = None) -> NewEvent:
    return NewEvent(
        event=event,
        team_id=team_id,
        patient_id=member.patient_id if member else None,
        actor_id=ACTOR,
    )


def _chunks(writes: list[StreamWrite]) -> Iterator[list[StreamWrite]]:
    for start in range(0, len(writes), CHUNK):
        yield writes[start : start + CHUNK]


# --- readings through to signal tasks, one worker --------------------------------------


async def signals(run: Run) -> Figures:
    figures = await _throughput(run)
    figures.update(await _push_latency(run))
    return figures


async def _throughput(run: Run) -> Figures:
    sizes = run.sizes
    members = cohort(sizes.signal_teams, sizes.signal_plans)
    teams = sorted({m.team_id for m in members})
    store = EventStore(run.pool)
    run.advance(f"signals: pre-filling {sizes.observations:,} readings")
    for chunk in _chunks(setup_writes(members)):
        await store.append_many(chunk)
    # Each team's first reading: the projection has reached the readings once past it.
    first_reading: dict[str, int] = {}
    last_reading: dict[str, int] = {}
    for chunk in _chunks(reading_writes(members, sizes.observations, datetime.now(UTC))):
        for recorded in await store.append_many(chunk):
            for r in recorded:
                first_reading.setdefault(r.envelope.team_id, r.position)
                last_reading[r.envelope.team_id] = r.position
    expected = sizes.observations  # every reading is out of range
    async with _relaying(run) as relay:
        run.advance("signals: the relay publishing the pre-fill")
        head = await store.head()
        await wait_until(relay.reached(head), 120 + head / 500, "the relay publishing the store")
        run.advance("signals: one worker signalling the readings")
        async with _worker(run) as worker:
            watch = _Progress(run, worker, teams, first_reading, last_reading, head)
            await wait_until(watch.started, 120, "the signals projection starting")
            cpu = worker.cpu_seconds()
            await wait_until(watch.signalled(expected), 120 + expected / 100, "the signals")
            seconds = time.perf_counter() - watch.began
            cpu = worker.cpu_seconds() - cpu
            run.advance("signals: checking the signal tasks on the board")
            await _check_tasks(run, members, sizes.observations)
    return {
        "signal_observations": expected / seconds,
        "signal_projection_observations": expected / max(watch.applied_at - watch.began, 1e-3),
        "signal_worker_cpu_ms_per_observation": cpu * 1000 / expected,
        "signal_worker_rss_mb": worker.peak_mb,
    }


@dataclass
class _Progress:
    """What the worker has done with the readings, from cheap looks at the read models."""

    run: Run
    worker: _Worker
    teams: list[str]
    first_reading: dict[str, int]
    last_reading: dict[str, int]
    after: int  # the store's head before the worker started: signals come after it
    began: float = 0.0
    applied_at: float = 0.0  # when the projection had applied every reading
    raised: int = 0

    async def _positions(self) -> dict[str, int]:
        self.worker.alive()
        rows = await self.run.pool.fetch(
            "SELECT team_id, position FROM projection_positions "
            "WHERE projection = 'signals' AND team_id = ANY($1::text[])",
            self.teams,
        )
        return {r["team_id"]: r["position"] for r in rows}

    async def started(self) -> bool:
        positions = await self._positions()
        if any(p >= self.first_reading[t] for t, p in positions.items()):
            self.began = time.perf_counter()
        return bool(self.began)

    def signalled(self, expected: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            if not self.applied_at:
                positions = await self._positions()
                if all(positions.get(t, 0) >= p for t, p in self.last_reading.items()):
                    self.applied_at = time.perf_counter()
            # Counted on from where the last look ended: a look reads only new events.
            row = await self.run.pool.fetchrow(
                "SELECT max(position) AS head, count(*) FILTER (WHERE type = 'SignalRaised' "
                "AND team_id = ANY($2::text[])) AS raised FROM events WHERE position > $1",
                self.after,
                self.teams,
            )
            assert row is not None  # an aggregate query answers one row
            if row["head"] is not None:
                self.after, self.raised = row["head"], self.raised + row["raised"]
            if self.raised < expected or not self.applied_at:
                return False
            owed = await self.run.pool.fetchval("SELECT count(*) FROM signal_outbox")
            return bool(owed == 0)

        return check


async def _check_tasks(run: Run, members: Sequence[Watched], readings: int) -> None:
    """One signal task per monitoring plan, and one open on the board counting every
    reading of its plan; AssertionError saying what is wrong otherwise."""
    plans = [m.plan_id for m in members]
    per_plan = {
        m.plan_id: readings // len(members) + (n < readings % len(members))
        for n, m in enumerate(members)
    }
    created = await run.pool.fetch(
        "SELECT payload->>'plan_id' AS plan_id, count(*) AS tasks FROM events "
        "WHERE type = 'TaskCreated' AND payload->>'source' = 'signal' "
        "AND payload->>'plan_id' = ANY($1::text[]) GROUP BY 1",
        plans,
    )
    wrong = [r["plan_id"] for r in created if r["tasks"] != 1]
    if len(created) != len(plans) or wrong:
        raise AssertionError(
            f"signal tasks created for {len(created)} of {len(plans)} plans, "
            f"{len(wrong)} plan(s) with more than one"
        )
    board = """SELECT plan_id, count(*) AS open, max(signal_count) AS signals FROM board_tasks
        WHERE source = 'signal' AND status = 'TODO' AND plan_id = ANY($1::text[]) GROUP BY 1"""
    found: dict[str, tuple[int, int]] = {}

    async def on_board() -> bool:
        rows = await run.pool.fetch(board, plans)
        found.clear()
        found.update({r["plan_id"]: (r["open"], r["signals"]) for r in rows})
        return all(found.get(p) == (1, n) for p, n in per_plan.items())

    try:
        await wait_until(on_board, 60, "the signal tasks on the board")
    except TimeoutError:
        off = sum(found.get(p) != (1, n) for p, n in per_plan.items())
        raise AssertionError(
            f"{off} of {len(plans)} plans lack one open board task counting their readings"
        ) from None


class _Relay:
    def __init__(self, run: Run, relay: OutboxRelay) -> None:
        self._run = run
        self._relay = relay

    def reached(self, head: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            position = await self._run.pool.fetchval(
                "SELECT position FROM relay_checkpoints WHERE topic = $1",
                self._run.settings.events_topic,
            )
            return bool(position is not None and position >= head)

        return check


@contextlib.asynccontextmanager
async def _relaying(run: Run) -> AsyncIterator[_Relay]:
    """The outbox relay running beside the worker (as `carecoord up` runs it), so the
    signal tasks reach the board."""
    relay = OutboxRelay(settings=run.settings, pool=run.pool)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield _Relay(run, relay)
    finally:
        stop.set()
        await task


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    peak_mb: float = 0.0

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({self.proc.returncode}); see {self.log}")

    def cpu_seconds(self) -> float:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)
        return 0.0

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process(self.proc.pid).memory_info().rss / (1 << 20)
            self.peak_mb = max(self.peak_mb, rss)


@contextlib.asynccontextmanager
async def _worker(run: Run) -> AsyncIterator[_Worker]:
    """One `carecoord worker` on the run's parts (with the development audit keys
    `carecoord up` would make), stopped when the block ends."""
    audit_keys.load(run.settings, create=True)
    pipeline_keys(run.settings, create=True)
    log = run.tmp / "signals-worker.log"
    proc = spawn([sys.executable, "-m", "services.cli", "worker"], environment(run.settings), log)
    worker = _Worker(proc, log)

    async def watch() -> None:
        while True:
            if proc.poll() is not None:
                return
            worker.sample()
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(watch())
    try:
        yield worker
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await stop_process(proc)


# --- reading -> board push ---------------------------------------------------------------


@dataclass
class Waits:
    """Readings sent and not yet seen on the board: for each plan, the signal count its
    task must reach for each reading, with when the reading was sent."""

    pending: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def expect(self, plan_id: str, at: float) -> int:
        count = self.sent.get(plan_id, 0) + 1
        self.sent[plan_id] = count
        self.pending.setdefault(plan_id, []).append((count, at))
        return count

    def failed(self, plan_id: str, count: int) -> None:
        """A reading that was not recorded: the later ones of its plan count one less."""
        self.sent[plan_id] -= 1
        self.pending[plan_id] = [
            (c - 1 if c > count else c, at) for c, at in self.pending[plan_id] if c != count
        ]

    def pushed(self, plan_id: str, count: int, at: float) -> None:
        waiting = self.pending.get(plan_id, [])
        self.latencies += [(at - sent) * 1000 for c, sent in waiting if c <= count]
        self.pending[plan_id] = [(c, sent) for c, sent in waiting if c > count]

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self.pending.values())


def signal_count(task: dict[str, Any]) -> int:
    """A pushed signal task's count: its signalCount, else what its title says
    ("... (3 signals)"; a task of one signal says no count)."""
    if task.get("signalCount") is not None:
        return int(task["signalCount"])
    found = COUNTED.search(task.get("title") or "")
    return int(found.group(1)) if found else 1


async def _push_latency(run: Run) -> Figures:
    sizes = run.sizes
    async with up(run) as (base_url, proc):
        with Peaks(proc.pid).running() as peaks:
            assert run.settings.jwt_secret is not None
            token = mint_token(
                secret=run.settings.jwt_secret.get_secret_value(),
                sub=ACTOR,
                name="Bench Lead",
                roles=[],
                ttl_seconds=3600,
            )
            async with client_session(base_url, token) as client:
                run.advance("signals: monitoring plans over GraphQL")
                plans = await _api_setup(client, sizes.signal_push_teams, sizes.signal_push_plans)
                teams = sorted({team for team, _, _ in plans})
                await _caught_up(run, teams)
                async with connect(base_url, token) as socket:
                    ops, counted = await _follow(client, socket, teams)
                    run.advance(f"signals: {sizes.signal_push_rate} readings/s offered")
                    waits = Waits()
                    listener = asyncio.create_task(_listen(socket, ops, waits))
                    try:
                        cpu = {part: peaks.cpu_seconds(part) for part in ("api", "worker")}
                        psutil.cpu_times_percent(interval=None)  # from here on
                        began = time.perf_counter()
                        load = await _readings(client, run, plans, waits)

                        async def all_seen() -> bool:
                            if listener.done():
                                listener.result()  # raises what ended it
                            return waits.waiting == 0

                        try:
                            await wait_until(all_seen, 30, "every reading's board push")
                        except TimeoutError:
                            raise CommandFailed(
                                f"{waits.waiting} of {load['signal_push_readings']:.0f} readings "
                                "never reached the board"
                            ) from None
                        # What the readings cost the API and the worker, in CPU: the API's per
                        # reading, the worker's as a share of one core while they came in.
                        seconds = time.perf_counter() - began
                        load["signal_push_api_cpu_ms_per_reading"] = (
                            (peaks.cpu_seconds("api") - cpu["api"])
                            * 1000
                            / max(load["signal_push_readings"], 1)
                        )
                        load["signal_push_worker_cpu_share"] = (
                            peaks.cpu_seconds("worker") - cpu["worker"]
                        ) / seconds
                        # How busy the whole machine was meanwhile (other work on it too).
                        idle = psutil.cpu_times_percent(interval=None).idle
                        load["signal_push_machine_busy"] = (100 - idle) / 100
                        load["signal_push_by_signal_count"] = float(counted)
                        load.update(await _raised_after(run, teams))
                    finally:
                        listener.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await listener
    latencies = waits.latencies
    return {
        "signal_push_p50": statistics.median(latencies),
        "signal_push_p99": percentile(latencies, 0.99),
        **load,
    }


async def _raised_after(run: Run, teams: list[str]) -> Figures:
    """Where a push's time goes: from a reading's commit to the commit of the signal it
    raised (relay, signal processor, drain), p50 and p99 in ms, by the store's clock."""
    row = await run.pool.fetchrow(
        """
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
        FROM (SELECT extract(epoch FROM s.recorded_at - o.recorded_at) * 1000 AS ms
              FROM events AS s JOIN events AS o ON o.event_id = s.causation_id::uuid
              WHERE s.type = 'SignalRaised' AND s.team_id = ANY($1::text[])) AS raised
        """,
        teams,
    )
    if row is None or row["p50"] is None:
        return {}
    return {"signal_push_raised_p50": row["p50"], "signal_push_raised_p99": row["p99"]}


async def _api_setup(
    client: aiohttp.ClientSession, teams: int, plans: int
) -> list[tuple[str, str, str]]:
    """(team, patient, plan) of `plans` ACTIVE care plans monitoring glucose over `teams`
    teams, made as a clinician would, the teams in parallel."""

    async def team(t: int, count: int) -> list[tuple[str, str, str]]:
        team_id = (await gql(client, CREATE_TEAM, {"name": f"Signals {t}"}))["createTeam"]["id"]
        made = []
        for n in range(count):
            mrn = f"P{t:03d}{n:04d}"
            patient = {"teamId": team_id, "mrn": mrn, "name": "Bench", "birthDate": "1958-02-03"}
            patient_id = (await gql(client, ENROLL, patient))["enrollPatient"]["id"]
            plan = {"patientId": patient_id, "title": "Diabetes care"}
            plan_id = (await gql(client, CREATE_PLAN, plan))["createCarePlan"]["id"]
            await gql(client, ADD_MONITORING, {"planId": plan_id})
            await gql(client, ACTIVATE, {"planId": plan_id})
            made.append((team_id, patient_id, plan_id))
        return made

    shares = [plans // teams + (t < plans % teams) for t in range(teams)]
    made = await asyncio.gather(*(team(t, n) for t, n in enumerate(shares)))
    return [p for team_plans in made for p in team_plans]


async def _caught_up(run: Run, teams: list[str]) -> None:
    """Every event of these teams applied by the boards and the signal processor: a push
    should time one reading, not the set-up behind it."""
    behind = """SELECT count(*) FROM events AS e
        CROSS JOIN (VALUES ('board'), ('signals')) AS v(projection)
        LEFT JOIN projection_positions AS p
               ON p.projection = v.projection AND p.team_id = e.team_id
        WHERE e.team_id = ANY($1::text[]) AND e.position > coalesce(p.position, 0)"""

    async def applied() -> bool:
        return bool(await run.pool.fetchval(behind, teams) == 0)

    await wait_until(applied, 120, "the worker applying the set-up")


async def _follow(
    client: aiohttp.ClientSession, socket: Socket, teams: list[str]
) -> tuple[set[str], bool]:
    """boardChanged of each team, live once a task made after subscribing has come
    through; with the task's signalCount when the API has it."""
    for counted in ("signalCount", ""):
        ops = {await socket.subscribe(BOARD_CHANGED % counted, {"teamId": t}): t for t in teams}
        probes = {}
        refused = False
        for op, team in ops.items():
            task = await gql(client, CREATE_TASK, {"teamId": team, "title": "Bench probe"})
            probes[task["createTask"]["id"]] = op
        while probes and not refused:
            message = await socket.receive(30)
            if message.get("id") not in ops:
                continue  # the refused subscriptions of a first try
            if message.get("type") == "error":
                refused = True  # no signalCount on this API's Task: subscribe without it
            elif message.get("type") == "next":
                pushed = message["payload"]["data"]["boardChanged"]["task"]
                probes.pop(pushed["id"], None)
        if not refused:
            return set(ops), bool(counted)
    raise CommandFailed("boardChanged refused the subscription")


async def _listen(socket: Socket, ops: set[str], waits: Waits) -> None:
    while True:
        message = await socket.receive(60)
        if message.get("id") not in ops:
            continue  # the refused subscriptions of a first try
        if message.get("type") != "next":
            raise CommandFailed(f"the subscription ended: {message.get('type')}")
        task = message["payload"]["data"]["boardChanged"]["task"]
        if task.get("source") == "SIGNAL" and task.get("planId"):
            waits.pushed(task["planId"], signal_count(task), time.perf_counter())


async def _readings(
    client: aiohttp.ClientSession,
    run: Run,
    plans: list[tuple[str, str, str]],
    waits: Waits,
) -> Figures:
    """recordObservation at the offered rate over the plans' patients, each out of range,
    sent on schedule whatever the answers do."""
    rate = run.sizes.signal_push_rate
    count = int(rate * run.sizes.signal_push_seconds)
    failed: list[str] = []

    async def one(n: int) -> None:
        _team, patient, plan = plans[n % len(plans)]
        at = datetime.now(UTC).isoformat()
        variables = {"patientId": patient, "value": out_of_range(n), "at": at}
        expected = waits.expect(plan, time.perf_counter())
        try:
            await gql(client, RECORD, variables)
        except (CommandFailed, aiohttp.ClientError, TimeoutError) as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            waits.failed(plan, expected)

    await open_loop(count, rate, lambda n, _due: one(n))
    if len(failed) == count:
        raise CommandFailed(f"every reading failed, e.g. {failed[:1]}")
    return {
        "signal_push_readings": count - len(failed),
        "signal_push_offered": rate,
        "signal_push_errors": len(failed),
    }
