"""The running stack (`carecoord up` on the run's parts): the board projector working through
the pre-filled care.events, GraphQL commands at a fixed offered load, mutation -> push
latency over a WebSocket, and the peak memory of the API and the worker meanwhile."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from services.bench.harness import Figures, Run, open_loop, percentile, wait_until
from services.bench.parts import environment, spawn, stop_process
from services.bench.ws import connect
from services.common import embedded
from services.common.auth import mint_token

CREATE_TEAM = "mutation($name: String!) { createTeam(name: $name) { id } }"
ENROLL = """mutation($teamId: ID!, $mrn: String!, $name: String!, $birthDate: Date!) {
  enrollPatient(teamId: $teamId, mrn: $mrn, name: $name, birthDate: $birthDate) { id } }"""
CREATE_PLAN = """mutation($patientId: ID!, $title: String!) {
  createCarePlan(patientId: $patientId, title: $title) { id } }"""
CREATE_TASK = """mutation($teamId: ID!, $title: String!, $patientId: ID) {
  createTask(teamId: $teamId, title: $title, patientId: $patientId) { id } }"""
ADD_GOAL = """mutation($planId: ID!, $description: String!) {
  addGoal(planId: $planId, description: $description) { id version } }"""
MOVE_TASK = """mutation($taskId: ID!, $status: TaskStatus!) {
  moveTask(taskId: $taskId, status: $status) { id status } }"""
BOARD_CHANGED = """subscription($teamId: ID!) {
  boardChanged(teamId: $teamId) { change task { id status } } }"""

BOARD_AT = """query($teamId: ID!, $atLeast: Position) {
  board(teamId: $teamId, atLeast: $atLeast) { position columns { tasks { id } } } }"""
ME = "query { me { userId name } }"
CYCLE = ("IN_PROGRESS", "DONE", "TODO")
PLANS_A_TEAM = 10
BENCH_USER = "bench-lead"
# uvicorn (as `carecoord api` runs it) closes a connection idle for 5 s; aiohttp reuses
# one idle for up to 15 s, oldest first. The load leaves ~100 connections open, and the
# one-at-a-time round trips after it came back to each ~5 s later, racing the server's
# close: "Server disconnected". A client must let go of a connection before the server does.
KEEP_ALIVE_SECONDS = 2.0
# How long the API is watched with nothing asked of it (half the command load's, if less).
IDLE_SECONDS = 5.0


class CommandFailed(RuntimeError):
    """A GraphQL answer with errors where the bench expected data."""


@dataclass
class Peaks:
    """Peak resident memory of the stack's API and worker processes, sampled in a thread."""

    root: int
    mb: dict[str, float] = field(default_factory=lambda: {"api": 0.0, "worker": 0.0})
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        while not self._stop.wait(0.2):
            for part, process in self.parts().items():
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss / (1 << 20)
                    self.mb[part] = max(self.mb[part], rss)

    def parts(self) -> dict[str, psutil.Process]:
        """The stack's API and worker processes (the supervisor restarts a dead one)."""
        found = {}
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.root).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if (part := child.cmdline()[-1]) in self.mb:
                        found[part] = child
        return found

    def cpu_seconds(self, part: str) -> float:
        process = self.parts().get(part)
        if process is None:
            return 0.0
        times = process.cpu_times()
        return float(times.user + times.system)

    @contextlib.contextmanager
    def running(self) -> Iterator[Peaks]:
        thread = threading.Thread(target=self.sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)


def _says_up(log: Path) -> bool:
    return b"carecoord is up" in log.read_bytes()


@contextlib.asynccontextmanager
async def carecoord_up(
    env: dict[str, str], log: Path, *, within: float
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`carecoord up` with this environment, its output in `log`, once it says it is up;
    stopped (killed if it will not stop within a minute) when the block ends."""
    proc = spawn([sys.executable, "-m", "services.cli", "up"], env, log)
    try:

        async def is_up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"carecoord up exited ({proc.returncode}); see {log}")
            return _says_up(log)

        await wait_until(is_up, within, "carecoord up")
        yield proc
    finally:
        await stop_process(proc, seconds=60)


@contextlib.asynccontextmanager
async def up(run: Run) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`carecoord up` on the run's parts; its output goes to a log file in the run's folder."""
    port = embedded.free_port()
    env = {**environment(run.settings), "CARECOORD_API_PORT": str(port)}
    async with carecoord_up(env, run.tmp / "stack.log", within=120) as proc:
        yield f"http://127.0.0.1:{port}", proc


async def stack(run: Run) -> Figures:
    async with up(run) as (base_url, proc):
        with Peaks(proc.pid).running() as peaks:
            run.advance("stack: projecting the pre-filled care.events")
            projection = await _projection(run)
            token = lead_token(run)
            async with client_session(base_url, token) as client:
                run.advance("stack: setting up teams, plans and tasks")
                teams, plans, tasks = await _setup(client, run.sizes.plans)
                run.advance(f"stack: {run.sizes.offered} commands/s offered")
                cpu, machine = peaks.cpu_seconds("api"), psutil.cpu_times()
                commands = await _load(client, run, plans, tasks)
                # What a command costs the API in CPU: at the offered rate, the share of a
                # core it needs (the machine's other parts share the rest).
                seconds = commands.pop("seconds")
                answered = commands["commands"] * seconds
                commands["command_api_cpu_ms"] = (peaks.cpu_seconds("api") - cpu) * 1000 / answered
                # The whole machine meanwhile (the stack, its parts and the load generator):
                # how close to its cores the load ran, which is what its p99 waits on.
                commands["command_machine_cores"] = _busy(machine, psutil.cpu_times()) / seconds
                run.advance("stack: the board projector catching up")
                await _caught_up(run, teams)
                run.advance("stack: nothing asked")
                idle_cpu_ms = await _idle(peaks, run)
                run.advance(f"stack: a query that reads nothing, {run.sizes.offered}/s offered")
                cpu = peaks.cpu_seconds("api")
                answered = await _queries(client, run)
                query_cpu_ms = (peaks.cpu_seconds("api") - cpu) * 1000 / answered
                run.advance("stack: mutation -> boardChanged")
                latencies = await _round_trips(client, base_url, token, teams[0], run)
                run.advance("stack: mutation -> board(atLeast)")
                fresh = await _read_your_writes(client, teams[0], run.sizes.changes)
    return {
        "projection_events": projection,
        **commands,
        "api_query_cpu_ms": query_cpu_ms,
        "api_idle_cpu_ms": idle_cpu_ms,
        "e2e_p50": statistics.median(latencies),
        "e2e_p99": percentile(latencies, 0.99),
        "rss_api_mb": peaks.mb["api"],
        "rss_worker_mb": peaks.mb["worker"],
        **fresh,
    }


def lead_token(run: Run) -> str:
    """An hour's access token of the bench's user, who creates the teams it works on."""
    assert run.settings.jwt_secret is not None
    return mint_token(
        secret=run.settings.jwt_secret.get_secret_value(),
        sub=BENCH_USER,
        name="Bench Lead",
        roles=[],
        ttl_seconds=3600,
    )


def _busy(before: Any, after: Any) -> float:
    """CPU seconds the machine's cores worked between two psutil.cpu_times(): not idle,
    waiting on I/O, or stolen by the hypervisor (guest time is already in user time)."""
    idle = {"idle", "iowait", "steal", "guest", "guest_nice"}
    return float(
        sum(getattr(after, f) - getattr(before, f) for f in after._fields if f not in idle)
    )


def client_session(base_url: str, token: str) -> aiohttp.ClientSession:
    """The HTTP client the commands go through, as the bench's user."""
    # aiohttp, not httpx: at 200 requests/s httpx's own CPU time made the load
    # generator the bottleneck (about 4-14 ms a request here).
    return aiohttp.ClientSession(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=KEEP_ALIVE_SECONDS),
        json_serialize=lambda v: orjson.dumps(v).decode(),
    )


async def _projection(run: Run) -> float:
    """Events/s the worker's board projector applies, from its first applied batch to the
    last, watching the positions it commits with each batch."""
    rows = await run.pool.fetch(
        "SELECT team_id, array_agg(position ORDER BY position) AS positions "
        "FROM events GROUP BY team_id"
    )
    positions = {r["team_id"]: list(r["positions"]) for r in rows}
    total = sum(len(p) for p in positions.values())
    seen: list[tuple[float, int]] = []

    async def applied() -> bool:
        done = await run.pool.fetch(
            "SELECT team_id, position FROM projection_positions WHERE projection = 'board'"
        )
        count = sum(
            bisect.bisect_right(positions.get(r["team_id"], []), r["position"]) for r in done
        )
        if count:
            seen.append((time.perf_counter(), count))
        return count >= total

    await wait_until(applied, 120 + total / 200, "the board projector catching up")
    (first_at, first), (last_at, last) = seen[0], seen[-1]
    if last_at == first_at:
        raise RuntimeError("the projector applied everything between two looks: too few events")
    return (last - first) / (last_at - first_at)


async def gql(
    client: aiohttp.ClientSession, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    async with client.post("/graphql", json={"query": query, "variables": variables}) as response:
        body: dict[str, Any] = await response.json(loads=orjson.loads)
        status = response.status
    if body.get("errors") or status != 200:
        codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
        raise CommandFailed(f"HTTP {status}, {codes}")
    data: dict[str, Any] = body["data"]
    return data


async def _setup(
    client: aiohttp.ClientSession, count: int
) -> tuple[list[str], list[str], list[str]]:
    teams: list[str] = []
    plans: list[str] = []
    tasks: list[str] = []
    for n in range(count):
        if n % PLANS_A_TEAM == 0:
            teams.append(
                (await gql(client, CREATE_TEAM, {"name": f"Bench {n}"}))["createTeam"]["id"]
            )
        team = teams[-1]
        patient = (
            await gql(
                client,
                ENROLL,
                {
                    "teamId": team,
                    "mrn": f"B{n:06d}",
                    "name": "Bench Patient",
                    "birthDate": "1968-03-14",
                },
            )
        )["enrollPatient"]["id"]
        plans.append(
            (await gql(client, CREATE_PLAN, {"patientId": patient, "title": "Diabetes care"}))[
                "createCarePlan"
            ]["id"]
        )
        tasks.append(
            (await gql(client, CREATE_TASK, {"teamId": team, "title": "Home BP log review"}))[
                "createTask"
            ]["id"]
        )
    return teams, plans, tasks


async def _load(
    client: aiohttp.ClientSession, run: Run, plans: list[str], tasks: list[str]
) -> Figures:
    """addGoal and moveTask in turn, sent on a fixed schedule whatever the answers do (an
    open loop), each timed from when it was due, so a slow stack cannot hide its queue."""
    rate, count = run.sizes.offered, int(run.sizes.offered * run.sizes.command_seconds)
    moves = [0] * len(tasks)
    latencies: list[float] = []
    failed: list[str] = []

    async def one(n: int, due: float) -> None:
        k = (n // 2) % len(plans)
        try:
            if n % 2 == 0:
                await gql(client, ADD_GOAL, {"planId": plans[k], "description": f"goal {n}"})
            else:
                moves[k] += 1
                status = CYCLE[moves[k] % len(CYCLE)]
                await gql(client, MOVE_TASK, {"taskId": tasks[k], "status": status})
        except (CommandFailed, aiohttp.ClientError, TimeoutError) as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            return
        latencies.append((time.perf_counter() - due) * 1000)

    seconds = await open_loop(count, rate, one)
    if not latencies:
        raise CommandFailed(f"every command failed, e.g. {failed[:1]}")
    return {
        "command_p50": statistics.median(latencies),
        "command_p99": percentile(latencies, 0.99),
        "commands": len(latencies) / seconds,
        "seconds": seconds,
        "commands_offered": rate,
        "command_errors": len(failed),
    }


async def _idle(peaks: Peaks, run: Run) -> float:
    """The API's CPU while nothing is asked of it, per command the offered rate would
    have sent meanwhile: what a command carries of the API's work by the second (its
    board-updates consumer long-polling the broker, which the embedded one answers only
    when the fetch wait runs out), not by the command."""
    cpu, began = peaks.cpu_seconds("api"), time.perf_counter()
    await asyncio.sleep(min(IDLE_SECONDS, run.sizes.command_seconds / 2))
    cpu, seconds = peaks.cpu_seconds("api") - cpu, time.perf_counter() - began
    return cpu * 1000 / (run.sizes.offered * seconds)


async def _queries(client: aiohttp.ClientSession, run: Run) -> int:
    """`me` at the offered rate for half the command load's time; the queries answered.

    `me` reads nothing (the caller comes from the token, verified once and then known):
    what it costs the API is carecoord's own work on every request (its middlewares,
    the sign-in, its GraphQL extensions: limits, masking, the access records' flush),
    the floor under a command that the bare mutation (`raw_graphql_cpu_ms`) leaves out."""
    count = int(run.sizes.offered * run.sizes.command_seconds / 2)
    answered = 0

    async def one(n: int, due: float) -> None:
        nonlocal answered
        data = await gql(client, ME, {})
        if data["me"]["userId"] != BENCH_USER:
            raise CommandFailed(f"me answered {data['me']['userId']!r}")
        answered += 1

    await open_loop(count, run.sizes.offered, one)
    return answered


async def _caught_up(run: Run, teams: list[str]) -> None:
    """Wait for the board projector to apply every event of these teams: a round trip
    should time one change, not the backlog the offered load left, which on a busy
    machine outlasts the 30 s a single push is given."""
    behind = """SELECT count(*) FROM events AS e
        LEFT JOIN projection_positions AS p ON p.projection = 'board' AND p.team_id = e.team_id
        WHERE e.team_id = ANY($1::text[]) AND e.position > coalesce(p.position, 0)"""
    backlog: int = await run.pool.fetchval(behind, teams)

    async def applied() -> bool:
        return bool(await run.pool.fetchval(behind, teams) == 0)

    await wait_until(applied, 120 + backlog / 200, "the board projector catching up")


async def _round_trips(
    client: aiohttp.ClientSession, base_url: str, token: str, team: str, run: Run
) -> list[float]:
    """One change at a time, each timed from the request leaving to its push arriving."""
    latencies = []
    async with connect(base_url, token) as socket:
        op_id = await socket.subscribe(BOARD_CHANGED, {"teamId": team})
        # The subscription is live once a change made after it arrives.
        fresh = (await gql(client, CREATE_TASK, {"teamId": team, "title": "Bench probe"}))[
            "createTask"
        ]["id"]
        while True:
            message = await socket.receive(30)
            if message.get("type") == "next" and _pushed(message, op_id)["id"] == fresh:
                break
        for n in range(run.sizes.changes):
            status = CYCLE[n % len(CYCLE)]
            started = time.perf_counter()
            await gql(client, MOVE_TASK, {"taskId": fresh, "status": status})
            while True:
                message = await socket.receive(30)
                if message.get("type") != "next":
                    raise CommandFailed(f"subscription ended: {message.get('type')}")
                pushed = _pushed(message, op_id)
                if pushed["id"] == fresh and pushed["status"] == status:
                    break
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def _committed(
    client: aiohttp.ClientSession, query: str, variables: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """A mutation's data and the position its answer says it committed at."""
    async with client.post("/graphql", json={"query": query, "variables": variables}) as response:
        body: dict[str, Any] = await response.json(loads=orjson.loads)
    if body.get("errors") or "position" not in body.get("extensions", {}):
        raise CommandFailed(f"no committed position: {body.get('errors')}")
    return body["data"], body["extensions"]["position"]


async def _read_your_writes(client: aiohttp.ClientSession, team: str, count: int) -> Figures:
    """createTask, then the board at once, `count` times each way: read plainly (how often
    the task is missing), and read with atLeast the answer's position (the wait: from the
    mutation's answer to the board's, with a plain read of a settled board beside it)."""
    missing, waits, plain = 0, [], []
    # Paced under the per-user read rate (20/s by default): three reads at most a round.
    count = min(count, 200)
    for n in range(count):
        await asyncio.sleep(0.1)
        task, at = await _committed(client, CREATE_TASK, {"teamId": team, "title": f"RYW {n}"})
        answered = time.perf_counter()
        if n % 2 == 0:
            board = await gql(client, BOARD_AT, {"teamId": team, "atLeast": None})
        else:
            board = await gql(client, BOARD_AT, {"teamId": team, "atLeast": at})
            waits.append((time.perf_counter() - answered) * 1000)
            started = time.perf_counter()
            await gql(client, BOARD_AT, {"teamId": team, "atLeast": None})
            plain.append((time.perf_counter() - started) * 1000)
        ids = {t["id"] for column in board["board"]["columns"] for t in column["tasks"]}
        if task["createTask"]["id"] not in ids:
            if n % 2 == 1:
                raise CommandFailed("board(atLeast) answered without the task")
            missing += 1
    return {
        "ryw_wait_p50": statistics.median(waits),
        "ryw_wait_p99": percentile(waits, 0.99),
        "ryw_plain_board_p50": statistics.median(plain),
        "ryw_plain_reads_missing": missing,
        "ryw_plain_reads": (count + 1) // 2,
    }


def _pushed(message: dict[str, Any], op_id: str) -> dict[str, Any]:
    if message.get("id") != op_id:
        raise CommandFailed(f"a message for another operation: {message.get('id')}")
    task: dict[str, Any] = message["payload"]["data"]["boardChanged"]["task"]
    return task
