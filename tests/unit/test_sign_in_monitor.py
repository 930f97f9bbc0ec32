"""The API's monitor of refused sign-ins when the API stops: counts still open are recorded
then, not never, and nothing is left to publish after the audit sink has closed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.audit import AccessRecorded
from services.api.sign_ins import SignInMonitor
from services.audit.sign_ins import Refusal, SignInTally, record
from services.audit.sink import AuditUnavailable, KafkaAuditSink
from services.common.dates import utcnow
from services.settings import Settings


class _Collecting:
    def __init__(self) -> None:
        self.batches: list[list[AccessRecorded]] = []

    async def publish(self, records: Sequence[AccessRecorded]) -> None:
        self.batches.append(list(records))

    async def close(self) -> None:
        return None


def _monitor(sink: _Collecting) -> SignInMonitor:
    repository: Any = None  # no record is named, so no patient is looked up
    return SignInMonitor(
        tally=SignInTally(window_seconds=3600, max_keys=10),
        audit=sink,
        repository=repository,
        clock=lambda: 0.0,
    )


async def test_closing_records_the_counts_of_open_windows_and_stops_the_sweeper() -> None:
    sink = _Collecting()
    monitor = _monitor(sink)
    # Other tests' monitors may sweep on this (session-wide) loop: only this one's count.
    earlier = asyncio.all_tasks()
    refusal = Refusal(client_addr="10.0.0.9", reason="bad signature", claimed_subject="u-x")
    for _ in range(3):
        monitor.refused(refusal)
    await monitor.drain()
    assert [[r.refusals for r in batch] for batch in sink.batches] == [[1]]

    await monitor.close()

    # The two counted refusals are recorded at shutdown, not an hour later or never.
    assert [[r.refusals for r in batch] for batch in sink.batches] == [[1], [2]]
    sweeping = [
        t for t in asyncio.all_tasks() - earlier if not t.done() and "_sweep" in repr(t.get_coro())
    ]
    assert sweeping == []


async def test_a_closed_audit_sink_refuses_to_publish_rather_than_start_a_producer() -> None:
    # Nothing listens on this port: a producer started now would never be stopped.
    settings = Settings(kafka_bootstrap="127.0.0.1:9", jwt_secret=SecretStr("x" * 32))
    sink = KafkaAuditSink(settings)
    await sink.close()
    refusal = Refusal(client_addr=None, reason="bad signature")

    with pytest.raises(AuditUnavailable, match="closed"):
        await sink.publish([record(refusal, at=utcnow(), patient_id=None)])
