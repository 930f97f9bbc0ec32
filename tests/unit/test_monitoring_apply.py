"""The care-signals read model with plain values: which readings a monitoring plan owes
the write side a signal for (thresholds, units, live watches only, no backfilled history),
the two latest readings by when they were taken, goal notices when progress moves, and
what makes an event unappliable (the dead-letter topic's)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from schemas.base import Event
from schemas.careplan import (
    CarePlanCreated,
    GoalAdded,
    GoalTargetSet,
    MonitoringAdded,
    MonitoringStopped,
    PlanStatusChanged,
)
from schemas.common import Comparator, Discipline, PlanStatus
from schemas.envelope import Envelope
from schemas.observation import ObservationRecorded, ObservationSource
from schemas.signal import SignalRaised, SignalStatus
from services.plans.domain import measures
from services.tasks import monitoring
from services.tasks.monitoring import Signals
from services.tasks.signals import GoalProgress

GLUCOSE = "2339-0"
STARTED = datetime(2026, 3, 2, 9, tzinfo=UTC)  # only differences of times matter


class Feed:
    """Events applied in store order to one read model, as the store would keep it."""

    def __init__(self) -> None:
        self.board = Signals()
        self.position = 0

    def apply(self, event: Event, *, at: datetime = STARTED) -> monitoring.Applied:
        self.position += 1
        env = Envelope.wrap(
            event,
            event_id=uuid.uuid4(),
            stream_id="stream-1",
            stream_version=self.position,
            team_id="team-1",
            actor_id="u-1",
            occurred_at=at,
            correlation_id="c-1",
            patient_id="patient-1",
        )
        applied = monitoring.apply(self.board, env, self.position)
        monitoring.merge(self.board, applied)
        return applied

    def read(self, value: float, unit: str = "mg/dL", *, at: datetime) -> monitoring.Applied:
        m = measures.measure(GLUCOSE)
        return self.apply(
            ObservationRecorded(
                observation_id=str(uuid.uuid4()),
                patient_id="patient-1",
                measure_code=GLUCOSE,
                value=value,
                unit=unit,
                canonical_value=measures.canonical(m, value, unit),
                canonical_unit=m.unit,
                at=at,
                source=ObservationSource.PATIENT_REPORTED,
                recorded_by="u-1",
            ),
            at=max(at, STARTED),
        )


def monitored(
    *, unit: str = "mg/dL", status: PlanStatus = PlanStatus.ACTIVE, **limits: float
) -> Feed:
    feed = Feed()
    feed.apply(
        CarePlanCreated(plan_id="plan-1", patient_id="patient-1", team_id="team-1", title="DM2")
    )
    if status is not PlanStatus.DRAFT:
        feed.apply(PlanStatusChanged(plan_id="plan-1", status=status, previous=PlanStatus.DRAFT))
    feed.apply(
        MonitoringAdded(
            plan_id="plan-1",
            monitoring_id="mon-1",
            measure_code=GLUCOSE,
            every_days=7,
            unit=unit,
            responsible_discipline=Discipline.NURSE,
            **(limits or {"low": 70, "high": 180, "critical_high": 300}),
        )
    )
    return feed


LATER = STARTED + timedelta(days=1)


@pytest.mark.parametrize(
    ("value", "status", "title"),
    [
        (
            250,
            SignalStatus.OUT_OF_RANGE,
            "Blood glucose 250 mg/dL: above 180 mg/dL",
        ),
        (60, SignalStatus.OUT_OF_RANGE, "Blood glucose 60 mg/dL: below 70 mg/dL"),
        (
            300,
            SignalStatus.CRITICAL,
            "Blood glucose 300 mg/dL: critical at or above 300 mg/dL",
        ),
    ],
)
def test_a_reading_beyond_a_threshold_owes_one_signal_naming_the_limit(
    value: float, status: SignalStatus, title: str
) -> None:
    feed = monitored()
    applied = feed.read(value, at=LATER)
    [owed] = applied.owed
    [reading] = owed.readings
    assert (owed.monitoring_id, owed.discipline, owed.team_id) == (
        "mon-1",
        Discipline.NURSE,
        "team-1",
    )
    assert (reading.status, reading.title, reading.position) == (status, title, feed.position)


@pytest.mark.parametrize("value", [70, 120, 180])
def test_a_reading_in_range_owes_nothing(value: float) -> None:
    assert monitored().read(value, at=LATER).owed == ()


def test_a_mg_per_dl_reading_is_judged_against_a_watch_kept_in_mmol_per_l() -> None:
    feed = monitored(unit="mmol/L", low=3.9, high=10.0, critical_high=16.7)
    assert feed.read(150, at=LATER).owed == ()  # 8.3 mmol/L
    [owed] = feed.read(250, at=LATER + timedelta(hours=1)).owed  # 13.9 mmol/L
    [reading] = owed.readings
    assert reading.status is SignalStatus.OUT_OF_RANGE
    assert reading.title == "Blood glucose 13.9 mmol/L (250 mg/dL): above 10 mmol/L"
    [critical] = feed.read(18, "mmol/L", at=LATER + timedelta(hours=2)).owed
    assert critical.readings[0].status is SignalStatus.CRITICAL
    assert "18 mmol/L" in critical.readings[0].title  # given in the watch's unit: as is


@pytest.mark.parametrize("status", [PlanStatus.DRAFT, PlanStatus.COMPLETED, PlanStatus.REVOKED])
def test_a_watch_on_a_plan_that_is_not_active_does_not_signal(status: PlanStatus) -> None:
    assert monitored(status=status).read(400, at=LATER).owed == ()


def test_a_stopped_watch_does_not_signal() -> None:
    feed = monitored()
    feed.apply(MonitoringStopped(plan_id="plan-1", monitoring_id="mon-1", reason="Stable."))
    assert not feed.board.watches["mon-1"].active
    assert feed.read(400, at=LATER).owed == ()


def test_a_reading_taken_more_than_an_interval_before_the_watch_began_does_not_signal() -> None:
    feed = monitored()
    assert feed.read(400, at=STARTED - timedelta(days=7, minutes=1)).owed == ()
    assert len(feed.read(400, at=STARTED - timedelta(days=6)).owed) == 1


def test_latest_and_previous_follow_when_readings_were_taken_not_when_they_arrived() -> None:
    feed = monitored()
    feed.read(100, at=LATER + timedelta(hours=5))
    feed.read(110, at=LATER + timedelta(hours=1))  # entered late: becomes the previous
    latest = feed.board.latest[("patient-1", GLUCOSE)]
    assert (latest.value, latest.previous_value) == (100, 110)
    feed.read(120, at=LATER)  # older than both: history only
    assert feed.board.latest[("patient-1", GLUCOSE)] == latest
    feed.read(130, at=LATER + timedelta(hours=9))
    latest = feed.board.latest[("patient-1", GLUCOSE)]
    assert (latest.value, latest.previous_value) == (130, 100)


def test_an_old_reading_out_of_range_still_signals_when_within_the_watch_interval() -> None:
    feed = monitored()
    feed.read(100, at=LATER + timedelta(hours=5))
    # The latest stays; the late reading is news all the same: it went out of range.
    assert len(feed.read(250, at=LATER).owed) == 1


def test_a_goal_notice_only_when_a_reading_moves_its_progress() -> None:
    feed = monitored()
    feed.apply(
        GoalAdded(
            plan_id="plan-1",
            goal_id="goal-1",
            description="Glucose down",
            due_date=date(2026, 12, 1),
        )
    )
    feed.apply(
        GoalTargetSet(
            plan_id="plan-1",
            goal_id="goal-1",
            measure_code=GLUCOSE,
            comparator=Comparator.LT,
            value=7.8,
            unit="mmol/L",
        )
    )
    [moved] = feed.read(200, at=LATER).moved  # NO_DATA -> ON_TRACK (11.1 mmol/L, far off)
    assert (moved.goal_id, moved.progress) == ("goal-1", GoalProgress.ON_TRACK)
    assert feed.read(190, at=LATER + timedelta(hours=1)).moved == ()  # closer: still on track
    [moved] = feed.read(230, at=LATER + timedelta(hours=2)).moved  # trending away
    assert moved.progress is GoalProgress.AT_RISK
    [moved] = feed.read(120, at=LATER + timedelta(hours=3)).moved  # 6.7 mmol/L
    assert moved.progress is GoalProgress.ACHIEVED
    assert feed.read(110, at=LATER - timedelta(days=3)).moved == ()  # history: no change


def test_a_signal_raised_records_the_task_and_the_silence_on_the_watch() -> None:
    feed = monitored()
    since = STARTED + timedelta(days=2)
    feed.apply(
        SignalRaised(
            monitoring_id="mon-1",
            plan_id="plan-1",
            patient_id="patient-1",
            task_id="task-9",
            status=SignalStatus.READING_OVERDUE,
            count=2,
            silent_since=since,
        )
    )
    watch = feed.board.watches["mon-1"]
    assert (watch.signal_task_id, watch.signals, watch.silence_signalled) == ("task-9", 2, since)


@pytest.mark.parametrize(
    "event",
    [
        MonitoringStopped(plan_id="plan-1", monitoring_id="unknown", reason="Stable."),
        PlanStatusChanged(plan_id="unknown", status=PlanStatus.ACTIVE, previous=PlanStatus.DRAFT),
        GoalTargetSet(
            plan_id="plan-1",
            goal_id="unknown",
            measure_code=GLUCOSE,
            comparator=Comparator.LT,
            value=7.8,
            unit="mmol/L",
        ),
        SignalRaised(
            monitoring_id="unknown",
            plan_id="plan-1",
            patient_id="patient-1",
            task_id="t",
            status=SignalStatus.OUT_OF_RANGE,
            count=1,
        ),
    ],
)
def test_a_change_to_a_record_the_read_model_lacks_cannot_be_applied(event: Event) -> None:
    with pytest.raises(ValueError, match="is not in the signals read model"):
        monitored().apply(event)


def test_a_reading_of_a_patient_without_monitoring_is_kept_as_the_latest_and_owes_nothing() -> None:
    feed = Feed()
    applied = feed.read(400, at=LATER)
    assert applied.owed == () and len(applied.latest) == 1


def test_silence_begins_at_the_last_reading_and_counts_every_days_plus_grace() -> None:
    feed = monitored()
    grace = timedelta(hours=24)
    watch, plan = feed.board.watches["mon-1"], feed.board.plans["plan-1"]
    due = STARTED + timedelta(days=7) + grace
    assert monitoring.silent_since(watch, None, plan, due, grace) is None
    assert monitoring.silent_since(watch, None, plan, due + timedelta(seconds=1), grace) == STARTED
    feed.read(100, at=LATER)
    latest = feed.board.latest[("patient-1", GLUCOSE)]
    assert monitoring.silent_since(watch, latest, plan, due + timedelta(seconds=1), grace) is None
    assert (
        monitoring.watch_status(watch, latest, plan, due + timedelta(days=1, seconds=1), grace)
        is SignalStatus.READING_OVERDUE
    )
    assert monitoring.watch_status(watch, latest, plan, LATER, grace) is SignalStatus.IN_RANGE
