"""One bench run: start the parts, take every step in order, print the table, save JSON."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from services.bench import (
    audit,
    graphql_floor,
    harness,
    raw,
    signals,
    stack,
    store,
    stream,
    subscribers,
)
from services.bench.harness import Report, Step
from services.bench.parts import started
from services.common.log import configure_logging

STEPS: list[Step] = [
    Step("pg", "PostgreSQL: COPY, one-row commits", ("raw_pg_copy", "raw_pg_commit"), raw.pg),
    Step(
        "kafka",
        "Kafka: produce, consume, one message's hop",
        ("raw_kafka_produce", "raw_kafka_consume", "raw_kafka_hop_p50", "raw_kafka_hop_p99"),
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
        "graphql",
        "GraphQL over HTTP: a bare mutation",
        ("raw_graphql_cpu_ms", "raw_graphql_p50", "raw_graphql_p99"),
        graphql_floor.graphql,
    ),
    Step(
        "stack",
        "stack: projector, commands, push latency, memory, read-your-writes",
        (
            "projection_events",
            "command_p50",
            "command_p99",
            "command_api_cpu_ms",
            "api_query_cpu_ms",
            "api_idle_cpu_ms",
            "command_machine_cores",
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
        alone=True,
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
        alone=True,
    ),
    Step(
        "audit",
        "audit log: append, verify",
        ("audit_append", "raw_audit_copy", "audit_verify"),
        audit.audit,
    ),
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


def _kind(quick: object) -> str:
    if isinstance(quick, bool):
        return "--quick" if quick else "full"
    return "unknown"


def groups(steps: list[Step]) -> list[list[Step]]:
    """The steps as they run, each group on parts of its own: every step that shares its
    parts with the others (in order: one may need what another left), then each step that
    runs alone."""
    shared = [step for step in steps if not step.alone]
    alone = [[step] for step in steps if step.alone]
    return ([shared] if shared else []) + alone


def _one_run(
    steps: list[Step], sizes: harness.Sizes, console: Console, where: dict[str, str]
) -> Report:
    report = Report()
    for group in groups(steps):
        tmp = Path(tempfile.mkdtemp(prefix="carecoord-bench-"))
        try:
            with started(tmp) as parts:
                console.print(f"PostgreSQL: {parts.postgres}; Kafka: {parts.broker}")
                measured = harness.run_steps(parts.settings, sizes, tmp, group, console)
                harness.merge(report, asyncio.run(measured))
                where.update(postgres=parts.postgres, kafka=parts.broker)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def bench(
    *,
    quick: bool,
    json_path: Path | None,
    console: Console,
    only: list[str] | None = None,
    repeat: int = 1,
    earlier: tuple[Path, dict[str, Any]] | None = None,
) -> Report:
    """Run the chosen steps `repeat` times, each on parts started afresh, and report each
    figure's median and min-max (ratios computed within each run); beside `earlier` (an
    earlier run's JSON) too when given."""
    steps = chosen(only or [])
    sizes = harness.QUICK if quick else harness.FULL
    configure_logging("warning", "console")
    began = time.perf_counter()
    runs: list[Report] = []
    where: dict[str, str] = {}
    for n in range(1, repeat + 1):
        if repeat > 1:
            console.rule(f"run {n} of {repeat}")
        runs.append(_one_run(steps, sizes, console, where))
    report = harness.combine(runs)
    seconds = time.perf_counter() - began
    title = f"carecoord bench{' --quick' if quick else ''}"
    if repeat > 1:
        title += f": the median of {repeat} runs"
    console.print(harness.table(report, title))
    for key, why in report.notes.items():
        console.print(f"{key}: {why}")
    if earlier is not None:
        path, document = earlier
        when = document.get("finished_at", "")
        console.print(
            harness.compare_table(report, document, f"today beside {path} ({when})".strip())
        )
        if document.get("sizes") != asdict(sizes):
            console.print(
                f"The earlier run measured other sizes ({_kind(document.get('quick'))} against "
                f"today's {_kind(quick)}): its figures are not like for like."
            )
    if json_path is not None:
        json_path.write_bytes(
            harness.to_json(report, quick=quick, sizes=sizes, parts=where, seconds=seconds)
        )
    return report
