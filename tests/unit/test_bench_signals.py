"""`carecoord bench`'s signals step: the data it pre-fills is what the signal processor
signals, and how a reading's board push is matched to it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from schemas.signal import SignalStatus
from schemas.task import TaskCreated
from services.bench import signals as bench
from services.bench.run import chosen
from services.common.aggregates import Repository
from services.common.memory_store import InMemoryEventStore
from services.tasks import monitoring, signal_side
from services.tasks.signals import Thresholds, classify

LIMITS = Thresholds(high=bench.HIGH, critical_high=bench.CRITICAL_HIGH)


def test_every_reading_the_step_sends_is_a_signal_some_of_them_critical() -> None:
    statuses = Counter(classify(LIMITS, bench.out_of_range(n)) for n in range(1_000))

    assert set(statuses) == {SignalStatus.OUT_OF_RANGE, SignalStatus.CRITICAL}
    assert min(statuses.values()) > 300  # a real share of each


async def test_the_pre_fill_makes_one_signal_a_reading_and_one_task_a_monitoring_plan() -> None:
    members = bench.cohort(teams=3, plans=7)
    store = InMemoryEventStore()
    await store.append_many(bench.setup_writes(members))
    await store.append_many(bench.reading_writes(members, 50, datetime.now(UTC)))

    # The signal processor's read model over the store, as the worker applies it.
    records = monitoring.Signals()
    owed = []
    for recorded in await store.read_all(0, 10_000):
        applied = monitoring.apply(records, recorded.envelope, recorded.position)
        monitoring.merge(records, applied)
        owed += applied.owed
    assert len(owed) == 50
    assert {c.monitoring_id for c in owed} == {m.monitoring_id for m in members}

    # ... and the write side, as the drain sends what it owes.
    repository = Repository(store)
    for command in owed:
        await signal_side.raise_signal(repository, command)
    events = [r.envelope for r in await store.read_all(0, 10_000)]
    tasks = [e.payload for e in events if isinstance(e.payload, TaskCreated)]
    assert Counter(t.plan_id for t in tasks) == Counter({m.plan_id: 1 for m in members})
    assert sum(e.type == "SignalRaised" for e in events) == 50


def test_a_push_times_every_reading_its_count_covers() -> None:
    waits = bench.Waits()
    waits.expect("plan-a", 10.0)
    waits.expect("plan-a", 10.5)
    waits.expect("plan-b", 10.2)

    waits.pushed("plan-a", 2, 11.0)  # both readings of plan-a signalled in one drain

    assert sorted(waits.latencies) == [500.0, 1000.0]
    assert waits.waiting == 1


def test_a_reading_the_api_refused_is_not_waited_for_and_the_later_ones_count_one_less() -> None:
    waits = bench.Waits()
    first = waits.expect("plan-a", 1.0)
    second = waits.expect("plan-a", 2.0)
    waits.expect("plan-a", 3.0)

    waits.failed("plan-a", second)
    waits.pushed("plan-a", 2, 4.0)

    assert first == 1
    assert sorted(waits.latencies) == [1000.0, 3000.0]
    assert waits.waiting == 0
    assert waits.expect("plan-a", 5.0) == 3


def test_a_pushed_task_s_count_comes_from_signal_count_else_from_its_title() -> None:
    title = "Glucose [Mass/volume] in Blood 312 mg/dL: critical at or above 300 mg/dL"

    assert bench.signal_count({"title": title, "signalCount": 4}) == 4
    assert bench.signal_count({"title": f"{title} (12 signals)"}) == 12
    assert bench.signal_count({"title": title}) == 1


def test_the_signals_step_runs_on_its_own() -> None:
    assert [s.name for s in chosen(["signals"])] == ["signals"]
