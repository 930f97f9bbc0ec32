"""The audit log: access records encrypted, chained and stored, then every entry verified;
and what making a read's access record durable costs the read (publish() latency)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.audit import keys as audit_keys
from services.audit import store
from services.audit.reports import AuditReader
from services.audit.sink import AuditSink, KafkaAuditSink, OutboxAuditSink
from services.bench.harness import Figures, Run, percentile
from services.common.dev_secrets import pipeline_keys

BATCH = 1000
CHAINS = 4
# Requests recording their reads at once (the API's pool is 20 connections).
CALLERS = 16

_NAMES = ("Amara Okafor", "Jonas Lindqvist", "Priya Raman", "Mateo Alvarez", "Grace Chen")
_REASONS = (
    "Reviewing medication list before the weekly care-team huddle.",
    "Updating the shared care plan after the home visit this morning.",
    "Checking lab results referenced in the referral from cardiology.",
)
_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126"
)


def record(n: int, at: datetime) -> AccessRecorded:
    """A realistic access record (~1 KB stored): sample names, not real people."""
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=at,
        actor_id=str(uuid.uuid4()),
        actor_name=_NAMES[n % len(_NAMES)],
        actor_roles=("clinician",),
        actor_disciplines=(Discipline.NURSE,) if n % 2 else (Discipline.PHYSICIAN,),
        patient_id=str(uuid.uuid4()),
        action=AccessAction.READ if n % 5 else AccessAction.UPDATE,
        resource_type="CarePlan",
        resource_id=str(uuid.uuid4()),
        purpose=Purpose.TREATMENT if n % 7 else Purpose.CARE_COORDINATION,
        outcome=AccessOutcome.PERMIT if n % 11 else AccessOutcome.PERMIT_REDACTED,
        reason=_REASONS[n % len(_REASONS)],
        sensitivity=(Sensitivity.MENTAL_HEALTH,) if n % 13 == 0 else (),
        request_id=uuid.uuid4().hex,
        correlation_id=str(uuid.uuid4()),
        client_addr=f"10.{n % 256}.{(n // 256) % 256}.{n % 200 + 1}",
        user_agent=_AGENT,
    )


async def audit(run: Run) -> Figures:
    """Batches of 1,000 records over 4 chains on one connection, as the audit writer
    appends them, then `verify` over everything written."""
    keys = audit_keys.load(run.settings, create=True)
    now = datetime.now(UTC)
    batches = [
        [record(b * BATCH + i, now) for i in range(BATCH)]
        for b in range(max(1, run.sizes.audit_entries // BATCH))
    ]
    entries = len(batches) * BATCH
    async with run.pool.acquire() as conn:
        started = time.perf_counter()
        for b, records in enumerate(batches):
            done = await store.append(
                conn,
                b % CHAINS,
                records,
                keys,
                role=run.settings.audit_db_role,
                checkpoint_every=run.settings.audit_checkpoint_entries,
                now=now,
            )
            if done.written != len(records):
                raise AssertionError(f"{done.written} of {len(records)} records written")
        append = entries / (time.perf_counter() - started)
    started = time.perf_counter()
    result = await AuditReader(run.pool, keys).verify()
    verify = result.entries_checked / (time.perf_counter() - started)
    if not result.ok or result.entries_checked < entries:
        raise AssertionError(f"verify: ok={result.ok}, {result.entries_checked} entries checked")
    return {"audit_append": append, "audit_verify": verify}


async def sinks(run: Run) -> Figures:
    """publish() of one access record (a read's), 16 callers at once: to the audit outbox
    (committed in PostgreSQL, the default) and, in turn, to care.audit (acks=all) as the
    API did before the outbox, which on the memory-only embedded broker is not durable."""
    pipeline_keys(run.settings, create=True)  # the run's own DEV key, in its data dir
    now = datetime.now(UTC)
    outbox = await _latencies(OutboxAuditSink(run.pool, run.settings), run.sizes.publishes, now)
    kafka = await _latencies(KafkaAuditSink(run.settings), run.sizes.publishes, now)
    return {
        "audit_outbox_p50": percentile(outbox, 0.50),
        "audit_outbox_p99": percentile(outbox, 0.99),
        "audit_kafka_p50": percentile(kafka, 0.50),
        "audit_kafka_p99": percentile(kafka, 0.99),
    }


async def _latencies(sink: AuditSink, count: int, now: datetime) -> list[float]:
    """Milliseconds per publish() of one record, `count` of them over CALLERS callers."""
    latencies: list[float] = []

    async def caller(first: int) -> None:
        for n in range(first, count, CALLERS):
            one = [record(n, now)]
            started = time.perf_counter()
            await sink.publish(one)
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        # Warm-up: the producer started, the statement prepared on every connection.
        await asyncio.gather(*(sink.publish([record(n, now)]) for n in range(CALLERS)))
        await asyncio.gather(*(caller(first) for first in range(CALLERS)))
    finally:
        await sink.close()
    return latencies
