"""Only the services can write the pipeline: on the real broker, a forged access record
produced straight to care.audit is never appended and a forged board update never reaches
a subscriber; both land on the dead-letter topic with the reason, and genuine ones (signed
with the services' key) go through."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from schemas import codec
from schemas.audit import AccessAction, AccessRecorded
from schemas.board import BoardChange, BoardUpdate, TaskCard
from schemas.common import AccessOutcome, Purpose, TaskStatus
from services.api.fanout import Hub
from services.common import kafka, pipeline_mac
from services.common.dev_secrets import pipeline_keys
from services.common.projection import ERROR_HEADER
from services.settings import Settings
from tests.conftest import wait_until
from tests.integration.kafka_helpers import produce, read_to_end
from tests.integration.workers import Workers

AT = datetime(2026, 11, 22, 9, tzinfo=UTC)


def access(patient: str) -> AccessRecorded:
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=AT,
        actor_id="user-1",
        actor_name="Pat Pharmacist",
        patient_id=patient,
        action=AccessAction.READ,
        resource_type="CarePlan",
        resource_id="plan-1",
        purpose=Purpose.TREATMENT,
        outcome=AccessOutcome.PERMIT,
        reason="user is a team member (PHARMACIST)",
    )


async def send(
    settings: Settings, topic: str, key: bytes, value: bytes, keys: pipeline_mac.PipelineKeys
) -> None:
    """One message, signed with the given keys (not necessarily the services')."""
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, key=key, value=value, headers=keys.sign(topic, key, value)
        )
    finally:
        await producer.stop()


async def test_a_forged_access_record_is_dead_lettered_and_a_genuine_one_appended(
    pool: asyncpg.Pool[Any], settings: Settings, workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    patient = "patient-1"
    unsigned, wrongly, elsewhere, genuine = (access(patient) for _ in range(4))
    topic, key = settings.audit_topic, patient.encode()
    await produce(settings, topic, [(key, codec.encode_access(unsigned), None)])
    # Signed, but with a key of the forger's own, under the services' key id.
    forger = pipeline_mac.parse(pipeline_mac.new_key_spec(pipeline_keys(settings).current))
    await send(settings, topic, key, codec.encode_access(wrongly), forger)
    # Signed by the services, but for another topic: moved here, it no longer verifies.
    services = pipeline_keys(settings)
    moved = codec.encode_access(elsewhere)
    producer = kafka.make_producer(settings)
    await producer.start()
    try:
        headers = services.sign(settings.board_updates_topic, key, moved)
        await producer.send_and_wait(topic, key=key, value=moved, headers=headers)
    finally:
        await producer.stop()
    await produce(settings, topic, [(key, codec.encode_access(genuine), None)], signed=True)
    with socket.socket() as probe:  # a free port for the worker's metrics
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = workers.start(settings, CARECOORD_WORKER_METRICS_PORT=str(port))

    async def appended() -> bool:
        worker.assert_alive()
        async with pool.acquire() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM audit_entries WHERE record_id = $1", genuine.record_id
                )
            )

    await wait_until(appended, seconds=60, what="the genuine access record in the audit log")
    async with pool.acquire() as conn:
        ids = {r["record_id"] for r in await conn.fetch("SELECT record_id FROM audit_entries")}
    assert ids == {genuine.record_id}

    dead = await read_to_end(settings, settings.dlq_topic)
    reasons = {m.value: m.headers[ERROR_HEADER] for m in dead}
    assert reasons[codec.encode_access(unsigned)].endswith(b"not signed by the services: no MAC")
    assert reasons[codec.encode_access(wrongly)].endswith(b"wrong MAC")
    assert reasons[moved].endswith(b"wrong MAC")
    assert codec.encode_access(genuine) not in reasons
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert f'carecoord_pipeline_refused_total{{reason="no MAC",topic="{topic}"}} 1.0' in metrics
    assert f'carecoord_pipeline_refused_total{{reason="wrong MAC",topic="{topic}"}} 2.0' in metrics
    # The dead-letter topic's count, by source topic and a bounded kind.
    assert f'carecoord_dead_lettered_total{{kind="refused-mac",topic="{topic}"}} 3.0' in metrics
    worker.assert_alive()
    # Logged by position only: no record's content in the worker's log.
    assert "Pat Pharmacist" not in worker.log.read_text()


async def test_a_pack_is_appended_record_by_record_and_one_from_a_broken_clock_held_back(
    pool: asyncpg.Pool[Any], settings: Settings, workers: Workers
) -> None:
    await kafka.ensure_topics(settings)
    good = [access("patient-1") for _ in range(3)]
    broken = access("patient-1").model_copy(update={"at": datetime(1999, 1, 1, tzinfo=UTC)})
    pack = codec.pack_access([codec.encode_access(r) for r in [good[0], broken, *good[1:]]])
    # And one on its own, from the same broken clock: nothing of it is appended.
    lone = access("patient-1").model_copy(update={"at": datetime(1999, 1, 1, tzinfo=UTC)})
    messages = [(b"patient-1", pack, None), (b"patient-1", codec.encode_access(lone), None)]
    await produce(settings, settings.audit_topic, messages, signed=True)
    worker = workers.start(settings)

    async def appended() -> bool:
        worker.assert_alive()
        return bool(await pool.fetchval("SELECT count(*) FROM audit_entries") >= 3)

    await wait_until(appended, seconds=60, what="the pack's good records in the audit log")
    ids = {r["record_id"] for r in await pool.fetch("SELECT record_id FROM audit_entries")}
    assert ids == {r.record_id for r in good}

    async def dead_lettered() -> bool:
        return len(await read_to_end(settings, settings.dlq_topic)) == 2

    await wait_until(dead_lettered, seconds=30, what="both messages on the dead-letter topic")
    dead = await read_to_end(settings, settings.dlq_topic)
    reasons = {m.value: m.headers[ERROR_HEADER] for m in dead}
    held = f"audit: access time out of range (records {broken.record_id}) (a broken clock?)"
    assert reasons[pack] == held.encode()  # the pack as it came
    alone = b"audit: access time out of range (a broken clock?)"
    assert reasons[codec.encode_access(lone)] == alone
    # The writer carries on: a record produced after them is appended.
    after = access("patient-1")
    later = [(b"patient-1", codec.encode_access(after), None)]
    await produce(settings, settings.audit_topic, later, signed=True)

    async def carried_on() -> bool:
        worker.assert_alive()
        query = "SELECT count(*) FROM audit_entries WHERE record_id = $1"
        return bool(await pool.fetchval(query, after.record_id))

    await wait_until(carried_on, seconds=30, what="a later record in the audit log")


def board_update(seq: int, team: str, title: str) -> BoardUpdate:
    card = TaskCard(
        task_id=f"task-{seq}",
        team_id=team,
        title=title,
        source="manual",
        status=TaskStatus.TODO,
        created_at=AT,
        updated_at=AT,
    )
    return BoardUpdate(seq=seq, team_id=team, kind="task", change=BoardChange.MOVED, task=card)


@contextlib.asynccontextmanager
async def running_hub(settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(settings, keys=pipeline_keys(settings))
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        yield hub
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_forged_board_update_is_never_pushed_and_a_genuine_one_is(
    settings: Settings,
) -> None:
    await kafka.ensure_topics(settings)
    team = f"team-{uuid.uuid4().hex[:8]}"
    topic, key = settings.board_updates_topic, team.encode()
    got: list[BoardUpdate] = []
    async with running_hub(settings) as hub:
        with hub.subscribe(team, on_overflow=lambda: None) as sub:
            # The hub reads from the end: signed updates until one arrives say it is live.
            seq = 0

            async def live() -> bool:
                nonlocal seq
                seq += 1
                value = codec.encode_board_update(board_update(seq, team, "Warm-up"))
                await produce(settings, topic, [(key, value, None)], signed=True)
                with contextlib.suppress(TimeoutError):
                    got.append(await asyncio.wait_for(sub.next(), 0.5))
                return bool(got)

            await wait_until(live, seconds=60, what="the hub reading care.board-updates")
            forged = codec.encode_board_update(
                board_update(1000, team, "FORGED: stop all anticoagulants today")
            )
            await produce(settings, topic, [(key, forged, None)])
            genuine = codec.encode_board_update(board_update(1001, team, "Check INR"))
            await produce(settings, topic, [(key, genuine, None)], signed=True)

            async def genuine_pushed() -> bool:
                while not sub.queue.empty():
                    got.append(sub.queue.get_nowait())
                return any(u.seq == 1001 for u in got)

            await wait_until(genuine_pushed, seconds=30, what="the genuine board update")
        refused = dict(hub.refused)
    # Same key, same partition: the forged one came first and was refused.
    assert all(u.task is None or not u.task.title.startswith("FORGED") for u in got)
    assert refused == {(topic, "no MAC"): 1}
    dead = await read_to_end(settings, settings.dlq_topic)
    [dl] = [m for m in dead if m.value == forged]
    assert dl.headers[ERROR_HEADER] == b"fanout: refused, not signed by the services: no MAC"
