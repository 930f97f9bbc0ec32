"""Subscriber scale: many boardChanged subscribers on one API process, each its own
WebSocket, as wall screens and apps hold them.

`carecoord up` on the run's parts; teams of `subscribers_a_team` members written to the
store; the subscribers connected from client processes of their own (so their memory is
not the API's), a few thousand sockets each. Measured:

- KB each: the API's resident memory with every subscriber connected, less before any
  connected, over their number (after the API has settled for a few seconds);
- push latency: createTask sent at a fixed rate (an open loop) over the teams, each timed
  from its mutation leaving to each of its team's subscribers receiving the push, p50/p99
  over every receipt;
- access records of pushes per change, durable hand-offs of them (outbox statements) per
  change, from the API's counters, and messages on care.audit per change.

    the client side: python -m services.bench.subscribers  (a JSON spec on stdin)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiohttp
import orjson
import psutil
import websockets
from aiokafka import TopicPartition
from websockets import Subprotocol

from schemas.common import Discipline
from schemas.patient import PatientEnrolled
from schemas.team import RoleAssigned, TeamCreated
from services.bench.harness import Figures, Run, open_loop, percentile, wait_until
from services.bench.stack import CommandFailed, Peaks, client_session, gql, up
from services.common import kafka
from services.common.auth import mint_token
from services.common.event_store import EventStore, NewEvent, StreamWrite

LEAD = "bench-lead"
CREATE_TASK = """mutation($teamId: ID!, $title: String!, $patientId: ID) {
  createTask(teamId: $teamId, title: $title, patientId: $patientId) { id } }"""
BOARD_CHANGED = """subscription($teamId: ID!) {
  boardChanged(teamId: $teamId) { change task { id title } } }"""
CHANGE = re.compile(r"^Bench change (\d+)$")
# Sockets one client process holds (its fd limit is 20,000), and opens at once.
SOCKETS_A_CLIENT = 2_500
OPENING_AT_ONCE = 64
# Let the API settle (allocator, GC) before its memory is read.
SETTLE_SECONDS = 3.0
CHUNK = 200


@dataclass(frozen=True)
class Subscriber:
    team_id: str
    token: str
    patient_id: str = ""  # the team's patient, whom the changes are about


# --- the parent: the stack, the teams, the load ---------------------------------------


async def subscribers(run: Run) -> Figures:
    sizes = run.sizes
    teams, size = sizes.subscriber_teams, sizes.subscribers_a_team
    async with up(run) as (base_url, proc):
        peaks = Peaks(proc.pid)
        api = peaks.parts()["api"]
        assert run.settings.jwt_secret is not None
        secret = run.settings.jwt_secret.get_secret_value()
        run.advance(f"subscribers: {teams:,} teams of {size}")
        members = await _teams(run, teams, size, secret)
        token = _token(secret, LEAD)
        async with client_session(base_url, token) as client:
            # One subscription and one change first, so what every request loads is loaded.
            await _warm(client, base_url, members[0])
            await asyncio.sleep(SETTLE_SECONDS)
            before = api.memory_info().rss
            run.advance(f"subscribers: connecting {len(members):,}")
            async with _clients(base_url, members) as clients:
                await _all_live(client, len(members), clients)
                await asyncio.sleep(SETTLE_SECONDS)
                after = api.memory_info().rss
                counted = await _counters(client)
                offsets = await _audit_offsets(run)
                cpu = peaks.cpu_seconds("api")
                psutil.cpu_times_percent(interval=None)  # from here on
                run.advance(f"subscribers: {sizes.subscriber_changes}/s board changes")
                patients = {m.team_id: m.patient_id for m in members}
                sent, answered = await _changes(client, run, sorted(patients.items()))
                expected = len(sent) * size
                await _received(clients, expected)
                busy = (100 - psutil.cpu_times_percent(interval=None).idle) / 100
                api_cpu = peaks.cpu_seconds("api") - cpu
                receipts = await clients.receipts()
                rss_loaded = api.memory_info().rss
                # The records of the last pushes reach care.audit through the relay.
                await asyncio.sleep(2.0)
                counted = _delta(await _counters(client), counted)
                messages = await _audit_offsets(run) - offsets
    latencies = [(at - sent[n]) * 1000 for n, at in receipts if n in sent]
    if not latencies:
        raise CommandFailed("no push arrived")
    # Where the time goes: a change's first push (the pipeline to the API's hub, then one
    # push) against its last (the fan-out to the team's other subscribers besides).
    first: dict[int, float] = {}
    for n, at in receipts:
        if n in sent:
            first[n] = min(first.get(n, at), at)
    firsts = [(at - sent[n]) * 1000 for n, at in first.items()]
    changes = max(len(sent), 1)
    figures: Figures = {
        "subscribers": float(len(members)),
        "subscribers_kb_each": (after - before) / 1024 / len(members),
        "subscribers_push_p50": statistics.median(latencies),
        "subscribers_push_p99": percentile(latencies, 0.99),
        "subscribers_pushes_lost": float(expected - len(latencies)),
        "subscribers_first_push_p50": statistics.median(firsts),
        "subscribers_first_push_p99": percentile(firsts, 0.99),
        "subscribers_change_p50": statistics.median(answered),
        "subscribers_change_p99": percentile(answered, 0.99),
        "subscribers_changes": float(len(sent)),
        "subscribers_changes_offered": float(sizes.subscriber_changes),
        "subscribers_api_rss_before_mb": before / (1 << 20),
        "subscribers_api_rss_mb": after / (1 << 20),
        "subscribers_api_rss_loaded_mb": rss_loaded / (1 << 20),
        "subscribers_api_cpu_share": api_cpu / sizes.subscriber_seconds,
        "subscribers_machine_busy": busy,
        "subscribers_machine_cpus": float(os.cpu_count() or 0),
        "subscribers_audit_messages_per_change": messages / changes,
        "subscribers_audit_outbox_left": counted.get("outbox", 0.0),
    }
    if "records" in counted:
        figures["subscribers_records_per_change"] = counted["records"] / changes
    if "handoffs" in counted:
        figures["subscribers_sends_per_change"] = counted["handoffs"] / changes
    else:  # an API that hands each push's records over on its own: one send a push
        figures["subscribers_sends_per_change"] = counted.get("pushes", expected) / changes
    return figures


def _token(secret: str, user_id: str) -> str:
    return mint_token(secret=secret, sub=user_id, name="Bench Member", ttl_seconds=3600)


async def _teams(run: Run, teams: int, size: int, secret: str) -> list[Subscriber]:
    """`teams` teams (led by the bench's lead, who makes the changes), each with `size`
    other members and a patient, written to the store; a subscriber per member. The
    changes are tasks about the patient, so each push is recorded (a task about no patient
    carries no patient data, and has no access record)."""
    store = EventStore(run.pool)
    writes, members = [], []
    for t in range(teams):
        team, patient = str(uuid.uuid4()), str(uuid.uuid4())
        created = TeamCreated(team_id=team, name="Bench team", lead_user_id=LEAD, lead_name="Lead")
        events = [NewEvent(event=created, team_id=team, actor_id=LEAD)]
        enrolled = PatientEnrolled(
            patient_id=patient,
            team_id=team,
            mrn=f"SUB{t:07d}",
            name="Bench Patient",
            birth_date=date(1961, 5, 17),
        )
        writes.append(
            StreamWrite(
                f"patient-{patient}",
                0,
                [NewEvent(event=enrolled, team_id=team, actor_id=LEAD, patient_id=patient)],
            )
        )
        for k in range(size):
            user = f"bench-member-{uuid.uuid4().hex[:12]}"
            assigned = RoleAssigned(
                team_id=team,
                user_id=user,
                name=f"Member {k}",
                discipline=Discipline.NURSE,
                lead=False,
            )
            events.append(NewEvent(event=assigned, team_id=team, actor_id=LEAD))
            members.append(Subscriber(team, _token(secret, user), patient))
        writes.append(StreamWrite(f"team-{team}", 0, events))
    for start in range(0, len(writes), CHUNK):
        await store.append_many(writes[start : start + CHUNK])
    return members


async def _warm(client: aiohttp.ClientSession, base_url: str, member: Subscriber) -> None:
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with _socket(url, member) as ws:
        title = "Bench warm-up"
        variables = {"teamId": member.team_id, "title": title, "patientId": member.patient_id}
        await gql(client, CREATE_TASK, variables)
        while True:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("type") == "next":
                return


@contextlib.asynccontextmanager
async def _socket(url: str, member: Subscriber) -> AsyncIterator[Any]:
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        open_timeout=60,
        # A browser sends no pings of its own: the server's keep the socket alive.
        ping_interval=None,
    ) as ws:
        auth = {"Authorization": f"Bearer {member.token}"}
        await ws.send(orjson.dumps({"type": "connection_init", "payload": auth}).decode())
        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
        if ack.get("type") != "connection_ack":
            raise CommandFailed(f"expected connection_ack, got {ack.get('type')!r}")
        subscribe = {"query": BOARD_CHANGED, "variables": {"teamId": member.team_id}}
        await ws.send(orjson.dumps({"id": "1", "type": "subscribe", "payload": subscribe}).decode())
        yield ws


async def _counters(client: aiohttp.ClientSession) -> dict[str, float]:
    """The API's subscription and push-record counters, from /metrics."""
    async with client.get("/metrics") as response:
        text = await response.text()
    wanted = {
        "carecoord_subscriptions": "subscriptions",
        "carecoord_subscription_deliveries": "pushes",
        "carecoord_push_access_records": "records",
        "carecoord_push_audit_handoffs": "handoffs",
        "carecoord_audit_outbox_depth": "outbox",
    }
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


def _delta(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
    return {k: v - then.get(k, 0.0) for k, v in now.items()}


async def _all_live(client: aiohttp.ClientSession, count: int, clients: _Clients) -> None:
    """Every subscription has joined the hub (the API counts them)."""

    async def live() -> bool:
        clients.alive()
        return (await _counters(client)).get("subscriptions", 0) >= count

    await wait_until(live, 120 + count / 50, f"{count:,} subscriptions")


async def _audit_offsets(run: Run) -> int:
    """Messages on care.audit so far (the sum of its partitions' end offsets)."""
    consumer = kafka.make_consumer(run.settings)
    await consumer.start()
    try:
        topic = run.settings.audit_topic
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            parts = await kafka.partitions_for(consumer, topic)
        ends = await consumer.end_offsets(parts)
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def _changes(
    client: aiohttp.ClientSession, run: Run, teams: list[tuple[str, str]]
) -> tuple[dict[int, float], list[float]]:
    """createTask at the offered rate over the teams, sent on schedule whatever the answers
    do; when each change left (time.monotonic, as the clients stamp receipts), and how
    long each took to be answered (ms)."""
    rate = run.sizes.subscriber_changes
    count = int(rate * run.sizes.subscriber_seconds)
    sent: dict[int, float] = {}
    answered: list[float] = []
    failed: list[str] = []

    async def one(n: int) -> None:
        team, patient = teams[n % len(teams)]
        variables = {"teamId": team, "title": f"Bench change {n}", "patientId": patient}
        sent[n] = time.monotonic()
        try:
            await gql(client, CREATE_TASK, variables)
        except (CommandFailed, aiohttp.ClientError, TimeoutError) as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            del sent[n]
            return
        answered.append((time.monotonic() - sent[n]) * 1000)

    await open_loop(count, rate, lambda n, _due: one(n))
    if not sent:
        raise CommandFailed(f"every change failed, e.g. {failed[:1]}")
    return sent, answered


async def _received(clients: _Clients, expected: int) -> None:
    async def all_in() -> bool:
        return await clients.received() >= expected

    with contextlib.suppress(TimeoutError):  # what never came is counted as lost
        await wait_until(all_in, 30, "every push")


class _Clients:
    """The client processes, talked to over their stdin/stdout, a JSON line each way."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    def alive(self) -> None:
        for proc in self.procs:
            if proc.returncode is not None:
                raise CommandFailed(f"a subscriber client exited ({proc.returncode})")

    async def ask(self, what: str) -> list[dict[str, Any]]:
        self.alive()
        answers = []
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(what.encode() + b"\n")
            await proc.stdin.drain()
        for proc in self.procs:
            assert proc.stdout is not None
            answers.append(orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 120)))
        return answers

    async def received(self) -> int:
        return sum(int(a["received"]) for a in await self.ask("count"))

    async def receipts(self) -> list[tuple[int, float]]:
        return [(int(n), float(at)) for a in await self.ask("receipts") for n, at in a["receipts"]]


@contextlib.asynccontextmanager
async def _clients(base_url: str, members: Sequence[Subscriber]) -> AsyncIterator[_Clients]:
    """Client processes holding the subscribers, once each has opened its sockets."""
    procs = []
    try:
        for start in range(0, len(members), SOCKETS_A_CLIENT):
            share = members[start : start + SOCKETS_A_CLIENT]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.bench.subscribers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,
            )
            assert proc.stdin is not None
            spec = {"url": base_url, "subscribers": [[m.team_id, m.token] for m in share]}
            proc.stdin.write(orjson.dumps(spec) + b"\n")
            procs.append(proc)
        clients = _Clients(procs)
        for proc in procs:
            assert proc.stdout is not None
            opened = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 600))
            if opened["failed"]:
                raise CommandFailed(f"{opened['failed']} sockets failed: {opened['error']}")
        yield clients
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# --- the client side: a few thousand sockets in a process of its own ------------------


class _Held:
    def __init__(self) -> None:
        self.receipts: list[tuple[int, float]] = []
        self.ended = 0


async def _hold(url: str, member: Subscriber, held: _Held, opened: asyncio.Future[None]) -> None:
    try:
        async with _socket(url, member) as ws:
            opened.set_result(None)
            async for raw in ws:
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "next":
                    at = time.monotonic()
                    title = message["payload"]["data"]["boardChanged"]["task"]["title"]
                    if found := CHANGE.match(title or ""):
                        held.receipts.append((int(found.group(1)), at))
                elif kind == "ping":
                    await ws.send('{"type": "pong"}')
                elif kind in ("error", "complete"):
                    break
    except Exception as exc:
        if not opened.done():
            opened.set_exception(exc)
    held.ended += 1


async def _client() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = orjson.loads(await reader.readline())
    url = spec["url"].replace("http://", "ws://") + "/graphql"
    held = _Held()
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    tasks = []

    async def open_one(member: Subscriber) -> None:
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            tasks.append(asyncio.create_task(_hold(url, member, held, opened)))
            await opened

    results = await asyncio.gather(
        *(open_one(Subscriber(t, token)) for t, token in spec["subscribers"]),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    error = f"{type(errors[0]).__name__}: {errors[0]}"[:300] if errors else None
    _say({"opened": len(results) - len(errors), "failed": len(errors), "error": error})
    while line := (await reader.readline()).strip():
        if line == b"count":
            _say({"received": len(held.receipts), "ended": held.ended})
        elif line == b"receipts":
            _say({"receipts": held.receipts, "ended": held.ended})
    for task in tasks:
        task.cancel()


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    asyncio.run(_client())
