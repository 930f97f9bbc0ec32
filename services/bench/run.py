"""One bench run: start the parts, take every step in order, print the table, save JSON."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from services.bench import audit, harness, raw, stack, store, stream
from services.bench.harness import Report, Step
from services.bench.parts import started
from services.common.log import configure_logging

STEPS: list[Step] = [
    ("PostgreSQL: COPY, one-row commits", ("raw_pg_copy", "raw_pg_commit"), raw.pg),
    ("Kafka: produce, consume", ("raw_kafka_produce", "raw_kafka_consume"), raw.kafka_raw),
    ("eventsourcing library: saves", ("eventsourcing_append",), store.eventsourcing),
    ("event store: appends", ("append_events",), store.append),
    ("relay: store -> care.events", (), store.relay),
    ("Faust: count-only agent", ("raw_faust_count",), stream.faust_count),
    (
        "stack: projector, commands, push latency, memory",
        (
            "projection_events",
            "command_p50",
            "command_p99",
            "commands",
            "e2e_p50",
            "e2e_p99",
            "rss_api_mb",
            "rss_worker_mb",
        ),
        stack.stack,
    ),
    ("rebuild: boards from the store", ("rebuild_events",), store.rebuild),
    ("audit log: append, verify", ("audit_append", "audit_verify"), audit.audit),
]


def bench(*, quick: bool, json_path: Path | None, console: Console) -> Report:
    sizes = harness.QUICK if quick else harness.FULL
    configure_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="carecoord-bench-"))
    began = time.perf_counter()
    try:
        with started(tmp) as parts:
            console.print(f"PostgreSQL: {parts.postgres}; Kafka: {parts.broker}")
            report = asyncio.run(harness.run_steps(parts.settings, sizes, tmp, STEPS, console))
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
