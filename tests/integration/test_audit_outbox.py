"""Access records are durable before the data leaves: the API commits them to the audit
outbox in PostgreSQL, the relay takes them on to care.audit at least once, and the writer
takes them out of the outbox as it appends them. A broker that loses everything while the
writer is paused, or an API killed right after answering, loses no record of a read."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from schemas import codec
from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose
from services.api.app import create_app
from services.audit import keys as audit_keys
from services.audit import outbox, store
from services.audit.keys import AuditKeys
from services.audit.relay import AuditRelay
from services.audit.reports import AuditReader
from services.audit.sink import AuditSink, AuditUnavailable, OutboxAuditSink
from services.common import db, embedded, kafka
from services.common.auth import mint_token
from services.common.dev_secrets import pipeline_keys
from services.settings import Settings
from tests import operations as op
from tests.conftest import Broker, wait_until
from tests.graphql import gql
from tests.integration.kafka_helpers import read_to_end, refuse_outbox
from tests.integration.workers import Workers

SECRET = "integration-test-secret-of-enough-length"
PLAN_TITLE = "Apixaban 5 mg twice daily, renal dose check"
# Reads released in each scenario.
N = 20


def token(sub: str, name: str) -> str:
    return mint_token(secret=SECRET, sub=sub, name=name)


LEAD = token("lead-1", "Dr Lead")
PHARMACIST = token("ph-1", "Pat Pharm")


@pytest.fixture
def keys(settings: Settings) -> AuditKeys:
    return audit_keys.load(settings, create=True)


@contextlib.asynccontextmanager
async def outbox_api(
    pool: asyncpg.Pool[Any], settings: Settings, *, audit: AuditSink | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process as deployed: access records go to the outbox (unless `audit`)."""

    async def kafka_ok() -> None:
        return None

    settings = settings.model_copy(update={"jwt_secret": SecretStr(SECRET)})
    app = create_app(settings, pool=pool, kafka_ping=kafka_ok, live_updates=False, audit=audit)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    if audit is not None:
        await audit.close()


@contextlib.asynccontextmanager
async def relaying(settings: Settings, pool: asyncpg.Pool[Any]) -> AsyncIterator[AuditRelay]:
    relay = AuditRelay(settings=settings, pool=pool)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def story(api: httpx.AsyncClient) -> tuple[str, str]:
    """A team with a pharmacist, a patient and a care plan: (patient id, plan id)."""
    team = (await gql(api, op.CREATE_TEAM, {"name": "Anticoagulation"}, token=LEAD))["createTeam"][
        "id"
    ]
    await gql(
        api,
        op.ASSIGN_ROLE,
        {"teamId": team, "userId": "ph-1", "name": "Pat Pharm", "discipline": "PHARMACIST"},
        token=LEAD,
    )
    patient = (
        await gql(
            api,
            op.ENROLL,
            {"teamId": team, "mrn": "MRN-OB-1", "name": "Olu Bello", "birthDate": "1950-02-03"},
            token=LEAD,
        )
    )["enrollPatient"]["id"]
    plan = (
        await gql(api, op.CREATE_PLAN, {"patientId": patient, "title": PLAN_TITLE}, token=LEAD)
    )["createCarePlan"]["id"]
    return patient, plan


async def read_plan(api: httpx.AsyncClient, plan: str, times: int) -> None:
    """The pharmacist reads the plan `times` times, and gets it every time (released)."""
    for _ in range(times):
        got = await gql(api, op.CARE_PLAN, {"id": plan}, token=PHARMACIST)
        assert got["carePlan"]["title"] == PLAN_TITLE


async def reads_logged(pool: asyncpg.Pool[Any], keys: AuditKeys, patient: str) -> int:
    """The pharmacist's reads of the patient's plan in the audit log."""
    found = await AuditReader(pool, keys).access_report(patient, None, None)
    return sum(
        1
        for f in found
        if f.record.actor_id == "ph-1"
        and f.record.action is AccessAction.READ
        and f.record.resource_type == "CarePlan"
    )


# Access times of this run, from today's clock (records older than a year could not be stored).
STARTED = datetime.now(UTC).replace(microsecond=0)


def access(n: int, patient: str = "patient-1") -> AccessRecorded:
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=STARTED + timedelta(seconds=n),
        actor_id="ph-1",
        actor_name="Pat Pharm",
        patient_id=patient,
        action=AccessAction.READ,
        resource_type="CarePlan",
        resource_id=f"plan-{n}",
        purpose=Purpose.TREATMENT,
        outcome=AccessOutcome.PERMIT,
        reason="user is a team member (PHARMACIST)",
    )


async def publish(
    pool: asyncpg.Pool[Any], settings: Settings, records: list[AccessRecorded]
) -> None:
    sink = OutboxAuditSink(pool, settings)
    try:
        await sink.publish(records)
    finally:
        await sink.close()


# --- the sink ------------------------------------------------------------------------


async def test_publish_commits_each_record_to_the_outbox_once_and_wakes_the_relay(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    records = [access(1, "patient-1"), access(2, "patient-2"), access(3, "patient-1")]
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    async with pool.acquire() as listener:
        await listener.add_listener(outbox.CHANNEL, wake)
        sink = OutboxAuditSink(pool, settings)
        await sink.publish(records)
        await sink.publish(records[:2])  # a retried publish adds nothing
        await wait_until(woken.is_set, what="the relay's channel to be notified")
        await listener.remove_listener(outbox.CHANNEL, wake)
        await sink.close()

    # Committed when publish() returned: another connection sees every record.
    rows = await pool.fetch("SELECT record_id, key, value, sent_at FROM audit_outbox")
    assert sorted((r["record_id"], bytes(r["key"])) for r in rows) == sorted(
        (r.record_id, (r.patient_id or "").encode()) for r in records
    )
    by_id = {r["record_id"]: bytes(r["value"]) for r in rows}
    assert all(codec.decode_access(by_id[r.record_id]) == r for r in records)
    assert all(r["sent_at"] is None for r in rows)


async def test_a_burst_of_publishes_wakes_the_relay_once_a_gap_not_once_each(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    notified = 0

    def wake(*_: object) -> None:
        nonlocal notified
        notified += 1

    async with pool.acquire() as listener:
        await listener.add_listener(outbox.CHANNEL, wake)
        sink = OutboxAuditSink(pool, settings, wake_gap=60.0)
        for n in range(20):  # one after another, as requests answered in turn publish
            await sink.publish([access(n)])
        await wait_until(lambda: notified > 0, what="the relay's channel to be notified")
        await asyncio.sleep(0.5)  # time for any further wake-up to land (there is none)
        await sink.close()
        await listener.remove_listener(outbox.CHANNEL, wake)
    assert notified == 1
    assert await pool.fetchval("SELECT count(*) FROM audit_outbox") == 20


async def test_reads_are_withheld_when_the_database_refuses_their_access_records(
    pool: asyncpg.Pool[Any], admin_pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    async with outbox_api(pool, settings) as api:
        _, plan = await story(api)
        await refuse_outbox(admin_pool)

        response = await api.post(
            "/graphql",
            json={"query": op.CARE_PLAN, "variables": {"id": plan}},
            headers={"Authorization": f"Bearer {PHARMACIST}"},
        )

    body = response.json()
    assert body["data"] is None, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["SERVICE_UNAVAILABLE"]
    assert PLAN_TITLE not in response.text


async def test_publish_fails_closed_when_the_database_is_gone(
    pg_admin_dsn: str, template_database: str, settings: Settings
) -> None:
    name = f"carecoord_gone_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        dsn = urlunsplit(urlsplit(pg_admin_dsn)._replace(path=f"/{name}"))
        gone = await db.create_pool(dsn, min_size=1, max_size=2)
        sink = OutboxAuditSink(
            gone, settings.model_copy(update={"audit_produce_timeout_seconds": 2})
        )
        await sink.publish([access(1)])
        # The database goes away (its connections are cut): nothing more is accepted.
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        with pytest.raises(AuditUnavailable):
            await sink.publish([access(2)])
        await sink.close()
        gone.terminate()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_api_shows_how_many_records_wait_in_the_outbox_and_for_how_long(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    async with outbox_api(pool, settings) as api:
        await story(api)
        metrics = (await api.get("/metrics")).text

    depth = await pool.fetchval("SELECT count(*) FROM audit_outbox")
    assert depth >= 2  # the enrolment and the plan (PHI), with no relay running
    assert f"carecoord_audit_outbox_depth {float(depth)}" in metrics
    assert "carecoord_audit_outbox_oldest_seconds" in metrics


# --- the relay and the writer --------------------------------------------------------


def id_of(record: AccessRecorded) -> str:
    return record.record_id


async def test_the_relay_packs_a_patients_records_due_together_into_one_signed_message(
    pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> None:
    # A change pushed to ten subscribers: ten records of one patient; and one of another.
    pushed = [access(n, "patient-1") for n in range(10)]
    other = access(10, "patient-2")
    await publish(pool, settings, [*pushed, other])

    async with relaying(settings, pool) as relay:
        await wait_until(lambda: relay.sent == 11, what="the relay to send every record")
    await kafka.ensure_topics(settings, [settings.audit_topic])
    received = await read_to_end(settings, settings.audit_topic)
    verifier = pipeline_keys(settings)
    for m in received:
        verifier.verify(settings.audit_topic, m.key, m.value, m.headers.items())
    by_key = {m.key: codec.decode_access_records(m.value) for m in received}
    assert len(received) == relay.messages == 2
    assert sorted(by_key[b"patient-1"], key=id_of) == sorted(pushed, key=id_of)
    assert by_key[b"patient-2"] == [other]
    # One record on its own goes as the record it is, as a process with no outbox sends it.
    alone = next(m for m in received if m.key == b"patient-2")
    assert alone.value == codec.encode_access(other)


async def test_the_relay_signs_what_it_sends_and_sends_again_what_the_log_has_not_taken(
    pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> None:
    settings = settings.model_copy(update={"audit_resend_seconds": 0.5})
    records = [access(n, f"patient-{n % 2}") for n in range(5)]
    await publish(pool, settings, records)
    wanted = {r.record_id for r in records}

    async def copies() -> dict[str, int]:
        await kafka.ensure_topics(settings, [settings.audit_topic])  # none, before a send
        received = await read_to_end(settings, settings.audit_topic)
        verifier = pipeline_keys(settings)
        counted: dict[str, int] = {}
        for m in received:
            verifier.verify(settings.audit_topic, m.key, m.value, m.headers.items())
            for record in codec.decode_access_records(m.value):
                counted[record.record_id] = counted.get(record.record_id, 0) + 1
        return counted

    async with relaying(settings, pool):
        # Nobody appends them: the relay sends each one again after the resend interval.
        async def each_sent_twice() -> bool:
            counted = await copies()
            return set(counted) == wanted and min(counted.values()) >= 2

        await wait_until(each_sent_twice, seconds=30, what="every record sent twice")

        # The writer appends them: out of the outbox in the same transaction.
        async with pool.acquire() as conn:
            appended = await store.append(
                conn,
                0,
                records,
                keys,
                role=settings.audit_db_role,
                checkpoint_every=1000,
                now=datetime.now(UTC),
            )
    assert appended.written == len(records)
    assert await pool.fetchval("SELECT count(*) FROM audit_outbox") == 0


async def test_a_row_too_large_for_the_broker_holds_up_nothing_else(
    pool: asyncpg.Pool[Any], settings: Settings
) -> None:
    await pool.execute(
        "INSERT INTO audit_outbox (record_id, at, key, value) VALUES ('huge', now(), 'p', $1)",
        b"x" * 2_000_000,  # over the producer's request size
    )
    records = [access(n) for n in range(3)]
    await publish(pool, settings, records)

    async def others_on_the_topic() -> bool:
        await kafka.ensure_topics(settings, [settings.audit_topic])
        received = await read_to_end(settings, settings.audit_topic)
        return {r.record_id for m in received for r in codec.decode_access_records(m.value)} == {
            r.record_id for r in records
        }

    async with relaying(settings, pool):
        await wait_until(others_on_the_topic, seconds=30, what="the other records sent")
    # Still queued, leased: tried again after the resend interval, not in a tight loop.
    assert await pool.fetchval("SELECT sent_at FROM audit_outbox WHERE record_id = 'huge'")


async def test_a_failed_append_leaves_the_records_in_the_outbox(
    pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> None:
    records = [access(1), access(2)]
    await publish(pool, settings, records)
    # A record the log refuses (no partition for its time) fails the whole append.
    bad = access(3).model_copy(update={"at": datetime(1999, 1, 1, tzinfo=UTC)})
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError):
            await store.append(
                conn,
                0,
                [*records, bad],
                keys,
                role=settings.audit_db_role,
                checkpoint_every=1000,
                now=datetime.now(UTC),
            )
    assert await pool.fetchval("SELECT count(*) FROM audit_outbox") == len(records)
    assert await pool.fetchval("SELECT count(*) FROM audit_entries") == 0


# --- the scenarios -------------------------------------------------------------------


async def test_reads_released_while_the_writer_is_paused_survive_the_broker_losing_everything(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    own_broker: Broker,
    workers: Workers,
    keys: AuditKeys,
) -> None:
    settings = settings.model_copy(
        update={
            "kafka_bootstrap": own_broker.bootstrap,
            "audit_resend_seconds": 2.0,
            "audit_produce_timeout_seconds": 2.0,
        }
    )
    worker = workers.start(settings)
    async with outbox_api(pool, settings) as api, relaying(settings, pool):
        patient, plan = await story(api)

        async def writer_appending() -> bool:
            worker.assert_alive()
            return bool(await pool.fetchval("SELECT count(*) FROM audit_entries"))

        await wait_until(writer_appending, seconds=60, what="the writer to append the story")
        worker.pause()
        await read_plan(api, plan, N)

        # The relay handed every record to the broker, which acknowledged it (acks=all).
        async def all_sent() -> bool:
            return not await pool.fetchval(
                "SELECT count(*) FROM audit_outbox WHERE sent_at IS NULL"
            )

        await wait_until(all_sent, seconds=30, what="the relay to send every record")
        own_broker.kill()  # memory only: care.audit and everything on it is gone
        await asyncio.to_thread(own_broker.start)
        worker.resume()

        async def all_logged() -> bool:
            worker.assert_alive()
            return await reads_logged(pool, keys, patient) >= N

        await wait_until(all_logged, seconds=90, what=f"all {N} reads in the audit log")
        await wait_until(
            lambda: outbox_empty(pool), seconds=30, what="the outbox to empty as they are appended"
        )
    assert await reads_logged(pool, keys, patient) == N
    assert (await AuditReader(pool, keys).verify()).ok


async def test_reads_answered_by_an_api_killed_right_after_are_all_logged_after_a_restart(
    pool: asyncpg.Pool[Any], settings: Settings, workers: Workers, keys: AuditKeys
) -> None:
    async with outbox_api(pool, settings) as api:
        patient, plan = await story(api)
    port = embedded.free_port()
    served = workers.start(
        settings, part="api", CARECOORD_API_PORT=str(port), CARECOORD_JWT_SECRET=SECRET
    )

    def listening() -> bool:
        served.assert_alive()
        return embedded.port_in_use(port)

    await wait_until(listening, seconds=60, what="the API to listen")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await read_plan(client, plan, N)
    served.kill()  # right after its last answer; no relay has run

    # Everything it released is in the outbox; the relay and the writer take it from there.
    workers.start(settings, part="relay")
    worker = workers.start(settings)

    async def all_logged() -> bool:
        worker.assert_alive()
        return await reads_logged(pool, keys, patient) >= N

    await wait_until(all_logged, seconds=90, what=f"all {N} reads in the audit log")
    await wait_until(lambda: outbox_empty(pool), seconds=30, what="the outbox to empty")
    assert await reads_logged(pool, keys, patient) == N


async def outbox_empty(pool: asyncpg.Pool[Any]) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM audit_outbox")


async def test_a_record_the_log_does_not_take_is_sent_again_less_and_less_often(
    pool: asyncpg.Pool[Any],
) -> None:
    """A long writer outage: each send doubles the wait before the next, up to eight times
    the resend interval, so the relay does not resend a growing backlog every interval."""
    await outbox.enqueue(pool, [access(1)])

    async def send() -> float:
        [claimed] = await outbox.claim(pool, limit=10, resend_after=30)
        waits = await pool.fetchval(
            "SELECT extract(epoch FROM resend_at - sent_at)::float8 FROM audit_outbox"
        )
        # Due again now, as if the wait had passed (the services' role may lease rows).
        await pool.execute("UPDATE audit_outbox SET resend_at = now() - interval '1 s'")
        assert claimed.record_id
        return float(waits)

    assert [round(await send()) for _ in range(5)] == [30, 60, 120, 240, 240]
    # Not due: nothing is claimed until the wait has passed.
    await pool.execute("UPDATE audit_outbox SET resend_at = now() + interval '1 h'")
    assert await outbox.claim(pool, limit=10, resend_after=30) == []
    # A send the broker refused does not count: due again at once, the wait as before.
    await pool.execute("UPDATE audit_outbox SET resend_at = now() - interval '1 s'")
    [claimed] = await outbox.claim(pool, limit=10, resend_after=30)
    await outbox.release(pool, [claimed.record_id])
    assert [round(await send())] == [240]
    attempts = await pool.fetchval("SELECT attempts FROM audit_outbox")
    assert attempts == 6
