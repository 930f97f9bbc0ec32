"""One bench run: start the parts, take every step in order, print the table, save JSON."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from services.bench import audit, harness, raw, signals, stack, store, stream, subscribers
from services.bench.harness import Report, Step
from services.bench.parts import started
from services.common.log import configure_logging

STEPS: list[Step] = [
    Step("pg", "PostgreSQL: COPY, one-row commits", ("raw_pg_copy", "raw_pg_commit"), raw.pg),
    Step(
        "kafka",
        "Kafka: produce, consume",
        ("raw_kafka_produce", "raw_kafka_consume"),
        raw.kafka_raw,
    ),
    Step(
        "eventsourcing",
        "eventsourcing library: saves",
        ("eventsourcing_append",),
        store.eventsourcing,
    ),
    Step("append", "event store: appends", ("append_events",), store.append),
    Step("relay", "relay: store -> care.events", (), store.relay, needs=("append",)),
    Step(
        "faust",
        "Faust: count-only agent",
        ("raw_faust_count",),
        stream.faust_count,
        needs=("relay",),
    ),
    Step(
        "stack",
        "stack: projector, commands, push latency, memory, read-your-writes",
        (
            "projection_events",
            "command_p50",
            "command_p99",
            "commands",
            "e2e_p50",
            "e2e_p99",
            "rss_api_mb",
            "rss_worker_mb",
            "ryw_wait_p50",
            "ryw_wait_p99",
        ),
        stack.stack,
        needs=("relay",),
    ),
    Step(
        "rebuild",
        "rebuild: boards from the store",
        ("rebuild_events",),
        store.rebuild,
        needs=("append",),
    ),
    Step(
        "signals",
        "care signals: readings -> signal tasks, push latency",
        ("signal_observations", "signal_push_p50", "signal_push_p99"),
        signals.signals,
    ),
    Step(
        "subscribers",
        "subscribers: memory each, push latency, push records",
        (
            "subscribers",
            "subscribers_kb_each",
            "subscribers_push_p50",
            "subscribers_push_p99",
            "subscribers_records_per_change",
            "subscribers_sends_per_change",
            "subscribers_audit_messages_per_change",
        ),
        subscribers.subscribers,
    ),
    Step("audit", "audit log: append, verify", ("audit_append", "audit_verify"), audit.audit),
    Step(
        "checkpoints",
        "audit log: checkpoint lag at 2,000 entries/s",
        ("audit_checkpoint_lag_p99", "audit_checkpoints_per_chain"),
        audit.checkpoint_lag,
    ),
    Step(
        "proofs",
        "audit log: proof latency",
        (
            "audit_inclusion_p50",
            "audit_inclusion_p99",
            "audit_consistency_p50",
            "audit_consistency_p99",
        ),
        audit.proofs,
    ),
    Step(
        "audit-sink",
        "audit sink: a read's record, outbox vs Kafka",
        ("audit_outbox_p50", "audit_outbox_p99", "audit_kafka_p50", "audit_kafka_p99"),
        audit.sinks,
    ),
]
NAMES = tuple(step.name for step in STEPS)


def chosen(only: list[str]) -> list[Step]:
    """The steps named, with the steps they need; all of them when none is named."""
    if not only:
        return STEPS
    wanted = set(only)
    for step in reversed(STEPS):  # a step's needs come before it
        if step.name in wanted:
            wanted.update(step.needs)
    return [step for step in STEPS if step.name in wanted]


def bench(
    *, quick: bool, json_path: Path | None, console: Console, only: list[str] | None = None
) -> Report:
    steps = chosen(only or [])
    sizes = harness.QUICK if quick else harness.FULL
    configure_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="carecoord-bench-"))
    began = time.perf_counter()
    try:
        with started(tmp) as parts:
            console.print(f"PostgreSQL: {parts.postgres}; Kafka: {parts.broker}")
            report = asyncio.run(harness.run_steps(parts.settings, sizes, tmp, steps, console))
            where = {"postgres": parts.postgres, "kafka": parts.broker}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - began
    console.print(harness.table(report, f"carecoord bench{' --quick' if quick else ''}"))
    for key, why in report.notes.items():
        console.print(f"{key}: {why}")
    if json_path is not None:
        json_path.write_bytes(
            harness.to_json(report, quick=quick, sizes=sizes, parts=where, seconds=seconds)
        )
    return report
