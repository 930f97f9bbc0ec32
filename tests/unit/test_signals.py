"""The care-signal rules with plain values: ranges and criticals, titles, overdue
readings, and measurable goals' progress."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.plans.domain import measures
from services.tasks import signals
from services.tasks.signals import GoalProgress, SignalStatus, Thresholds

GLUCOSE = Thresholds(low=70, high=180, critical_high=300)
T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)  # readings' times: only their order matters


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (69.9, SignalStatus.OUT_OF_RANGE),
        (70, SignalStatus.IN_RANGE),
        (180, SignalStatus.IN_RANGE),
        (180.1, SignalStatus.OUT_OF_RANGE),
        (299.9, SignalStatus.OUT_OF_RANGE),
        (300, SignalStatus.CRITICAL),
        (612, SignalStatus.CRITICAL),
    ],
)
def test_a_reading_is_in_range_out_of_range_or_critical(value: float, status: SignalStatus) -> None:
    assert signals.classify(GLUCOSE, value) is status


def test_a_critical_low_limit_and_limits_left_unset() -> None:
    both = Thresholds(low=4, high=10, critical_low=3, critical_high=20)
    assert signals.classify(both, 3) is SignalStatus.CRITICAL
    assert signals.classify(both, 3.5) is SignalStatus.OUT_OF_RANGE
    assert signals.classify(Thresholds(high=140), 0) is SignalStatus.IN_RANGE
    assert signals.classify(Thresholds(), 1e9) is SignalStatus.IN_RANGE


def test_a_signal_title_names_the_measure_the_reading_and_the_limit_crossed() -> None:
    assert (
        signals.signal_title("Blood glucose", 312, "mg/dL", GLUCOSE)
        == "Blood glucose 312 mg/dL: critical at or above 300 mg/dL"
    )
    assert (
        signals.signal_title("Blood glucose", 251.5, "mg/dL", GLUCOSE)
        == "Blood glucose 251.5 mg/dL: above 180 mg/dL"
    )
    assert signals.signal_title("Blood glucose", 60, "mg/dL", GLUCOSE).endswith("below 70 mg/dL")
    assert signals.signal_title("Blood glucose", 100, "mg/dL", GLUCOSE) == "Blood glucose 100 mg/dL"


def test_a_reading_is_overdue_after_its_interval_and_the_grace() -> None:
    grace = timedelta(days=1)
    weekly = 7
    assert not signals.reading_overdue(T0, T0, weekly, grace, T0 + timedelta(days=8))
    assert signals.reading_overdue(T0, T0, weekly, grace, T0 + timedelta(days=8, seconds=1))
    # No reading yet: counted from when the plan started.
    assert signals.reading_overdue(None, T0, weekly, grace, T0 + timedelta(days=9))
    assert not signals.reading_overdue(None, T0, weekly, grace, T0 + timedelta(days=2))


def readings(*values: float) -> list[tuple[datetime, float]]:
    return [(T0 + timedelta(days=7 * i), v) for i, v in enumerate(values)]


TODAY = date(2026, 3, 1)
FAR, NEAR = TODAY + timedelta(days=60), TODAY + timedelta(days=10)


@pytest.mark.parametrize(
    ("comparator", "target", "high", "values", "due", "progress"),
    [
        ("LT", 7.0, None, (), FAR, GoalProgress.NO_DATA),
        ("LT", 7.0, None, (8.1, 6.9), FAR, GoalProgress.ACHIEVED),
        ("LT", 7.0, None, (8.1, 7.0), FAR, GoalProgress.ON_TRACK),  # 7.0 is not below 7.0
        ("LE", 7.0, None, (8.1, 7.0), FAR, GoalProgress.ACHIEVED),
        ("LT", 7.0, None, (8.1, 7.6), FAR, GoalProgress.ON_TRACK),  # coming down
        ("LT", 7.0, None, (7.6, 8.1), FAR, GoalProgress.AT_RISK),  # trending away
        ("LT", 7.0, None, (8.1, 7.6), NEAR, GoalProgress.AT_RISK),  # due soon, not met
        ("LT", 7.0, None, (8.1, 7.6), TODAY - timedelta(days=1), GoalProgress.AT_RISK),  # past due
        ("LT", 7.0, None, (8.1, 6.5), TODAY - timedelta(days=1), GoalProgress.ACHIEVED),  # late
        ("GE", 8000, None, (5000, 6500), None, GoalProgress.ON_TRACK),  # steps, no due date
        ("GE", 8000, None, (6500, 5000), None, GoalProgress.AT_RISK),
        ("BETWEEN", 70, 180, (250, 160), FAR, GoalProgress.ACHIEVED),
        ("BETWEEN", 70, 180, (160, 60), FAR, GoalProgress.AT_RISK),
        ("BETWEEN", 70, 180, (250,), FAR, GoalProgress.ON_TRACK),  # one reading: no trend yet
    ],
)
def test_goal_progress_follows_the_documented_rule(
    comparator: str,
    target: float,
    high: float | None,
    values: tuple[float, ...],
    due: date | None,
    progress: GoalProgress,
) -> None:
    got = signals.goal_progress(comparator, target, high, readings(*values), due, TODAY)
    assert got is progress


def test_readings_count_in_time_order_whatever_order_they_arrive_in() -> None:
    late_first = list(reversed(readings(8.1, 6.9)))
    assert signals.goal_progress("LT", 7.0, None, late_first, FAR, TODAY) is GoalProgress.ACHIEVED


def test_a_between_target_needs_its_upper_value_and_comparators_are_known() -> None:
    with pytest.raises(ValueError, match="upper value"):
        signals.distance("BETWEEN", 70, None, 100)
    with pytest.raises(ValueError, match="unknown comparator"):
        signals.distance("NE", 70, None, 100)


@given(
    st.sampled_from(["LT", "LE", "GT", "GE", "BETWEEN"]),
    st.floats(-1e6, 1e6),
    st.floats(0, 1e6),
    st.floats(-1e7, 1e7),
)
def test_a_value_meets_its_target_exactly_when_it_is_at_no_distance_but_for_strict_bounds(
    comparator: str, target: float, width: float, value: float
) -> None:
    high = target + width if comparator == "BETWEEN" else None
    d = signals.distance(comparator, target, high, value)
    assert d >= 0
    if signals.meets(comparator, target, high, value):
        assert d == 0
    elif comparator not in ("LT", "GT"):
        assert d > 0
    else:
        assert d > 0 or value == target


def test_a_converted_reading_is_titled_rounded_in_the_plans_unit_with_the_recorded_value() -> None:
    title = signals.signal_title("Blood glucose", 333.289, "mg/dL", GLUCOSE, given=(18.5, "mmol/L"))
    assert title == "Blood glucose 333 mg/dL (18.5 mmol/L): critical at or above 300 mg/dL"
    assert signals.signal_title(
        "Weight", 0.04536, "kg", signals.Thresholds(), given=(0.1, "lb")
    ) == ("Weight 0.0454 kg (0.1 lb)")
    assert signals.signal_title(
        "Daily steps", 123456.7, "", signals.Thresholds(), given=(1, "x")
    ) == ("Daily steps 123457 (1 x)")


def test_a_score_or_a_daily_count_is_titled_without_a_unit() -> None:
    assert measures.display_unit("{score}") == "" and measures.display_unit("/d") == ""
    assert measures.display_unit("mm[Hg]") == "mmHg" and measures.display_unit("mg/dL") == "mg/dL"
    title = signals.signal_title(
        "PHQ-9", 16, measures.display_unit("{score}"), signals.Thresholds(None, 9)
    )
    assert title == "PHQ-9 16: above 9"
