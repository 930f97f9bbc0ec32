"""Care signals, the rules: how a reading stands against a monitoring plan's thresholds,
when a plan's reading is overdue, what a signal task says, and how far a measurable goal
has come. Pure: plain values in (readings already in the measure's canonical unit, times
passed in), plain values out; the processor that turns readings into tasks builds on it.

Goal progress, the rule:
- NO_DATA: no reading of the goal's measure yet.
- ACHIEVED: the latest reading meets the target (a goal met late is still met).
- AT_RISK: the latest reading misses the target and either it is farther from the target
  than the reading before it (trending away), or the due date is less than
  AT_RISK_DAYS away or past.
- ON_TRACK: the latest reading misses the target, but no farther than the one before, with
  more than AT_RISK_DAYS to go (or no due date).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from schemas.signal import SignalStatus

# A goal whose due date is this close (or past) and not met is at risk.
AT_RISK_DAYS = 14


class GoalProgress(StrEnum):
    ON_TRACK = "ON_TRACK"
    AT_RISK = "AT_RISK"
    ACHIEVED = "ACHIEVED"
    NO_DATA = "NO_DATA"


@dataclass(frozen=True)
class Thresholds:
    """A monitoring plan's limits (None: not set), in the unit of the values compared with
    them: the canonical one, or the monitoring plan's own."""

    low: float | None = None
    high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None


def classify(limits: Thresholds, value: float) -> SignalStatus:
    """Where a reading (canonical unit) stands: CRITICAL beyond a critical limit (a
    critical limit is itself still critical), OUT_OF_RANGE outside low..high, else IN_RANGE."""
    if limits.critical_high is not None and value >= limits.critical_high:
        return SignalStatus.CRITICAL
    if limits.critical_low is not None and value <= limits.critical_low:
        return SignalStatus.CRITICAL
    if limits.high is not None and value > limits.high:
        return SignalStatus.OUT_OF_RANGE
    if limits.low is not None and value < limits.low:
        return SignalStatus.OUT_OF_RANGE
    return SignalStatus.IN_RANGE


def crossed(limits: Thresholds, value: float) -> tuple[str, float] | None:
    """The limit a reading is beyond, as ('critical above', 300.0) and the like; None in
    range. What a signal task's title names."""
    if limits.critical_high is not None and value >= limits.critical_high:
        return "critical at or above", limits.critical_high
    if limits.critical_low is not None and value <= limits.critical_low:
        return "critical at or below", limits.critical_low
    if limits.high is not None and value > limits.high:
        return "above", limits.high
    if limits.low is not None and value < limits.low:
        return "below", limits.low
    return None


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.6g}"


def _rounded(value: float) -> str:
    """A converted value to three significant digits, never in exponent form."""
    if value == 0 or not math.isfinite(value):
        return _number(value)
    return _number(round(value, max(0, 2 - math.floor(math.log10(abs(value))))))


def _with(number: str, unit: str) -> str:
    return f"{number} {unit}" if unit else number


def signal_title(
    label: str,
    value: float,
    unit: str,
    limits: Thresholds,
    *,
    given: tuple[float, str] | None = None,
) -> str:
    """A signal task's title: the measure, the reading in the limits' unit and the limit it
    crossed, e.g. 'Blood glucose 312 mg/dL: critical at or above 300 mg/dL'. `unit` is
    as shown (display_unit); `given` is the reading as recorded when `value` was converted
    from it: the converted value is rounded and the recorded one follows in brackets."""
    reading = f"{label} {_with(_rounded(value) if given else _number(value), unit)}"
    if given is not None:
        reading += f" ({_with(_number(given[0]), given[1])})"
    beyond = crossed(limits, value)
    if beyond is None:
        return reading
    words, limit = beyond
    return f"{reading}: {words} {_with(_number(limit), unit)}"


def bare_title(label: str, value: float, unit: str, limits: Thresholds) -> str:
    """A signal task's title without the reading: the measure and the limit it crossed,
    e.g. 'Blood glucose: critical at or above 300 mg/dL'."""
    beyond = crossed(limits, value)
    if beyond is None:
        return f"{label}: out of range"
    words, limit = beyond
    return f"{label}: {words} {_with(_number(limit), unit)}"


def reading_overdue(
    last_reading: datetime | None,
    started: datetime,
    every_days: int,
    grace: timedelta,
    now: datetime,
) -> bool:
    """A plan taking a reading every `every_days` is overdue once that long plus `grace`
    has passed since its last reading (or since it started, with none yet)."""
    since = last_reading or started
    return now > since + timedelta(days=every_days) + grace


def distance(comparator: str, target: float, high: float | None, value: float) -> float:
    """How far a value is from the target's bound (0 at or within it): what "trending
    away" compares. Comparators: LT, LE, GT, GE, BETWEEN (target..high, inclusive)."""
    if comparator in ("LT", "LE"):
        return max(0.0, value - target)
    if comparator in ("GT", "GE"):
        return max(0.0, target - value)
    if comparator == "BETWEEN":
        if high is None:
            raise ValueError("a BETWEEN target needs its upper value")
        return max(0.0, target - value, value - high)
    raise ValueError(f"unknown comparator {comparator!r}")


def meets(comparator: str, target: float, high: float | None, value: float) -> bool:
    """Whether a value meets the target (LT and GT strictly, the others inclusive)."""
    if comparator == "LT":
        return value < target
    if comparator == "LE":
        return value <= target
    if comparator == "GT":
        return value > target
    if comparator == "GE":
        return value >= target
    return distance(comparator, target, high, value) == 0.0


def goal_progress(
    comparator: str,
    target: float,
    high: float | None,
    readings: Sequence[tuple[datetime, float]],
    due: date | None,
    today: date,
) -> GoalProgress:
    """The rule of the module docstring, over readings (time, canonical value) in any order."""
    if not readings:
        return GoalProgress.NO_DATA
    ordered = sorted(readings, key=lambda r: r[0])
    latest = ordered[-1][1]
    if meets(comparator, target, high, latest):
        return GoalProgress.ACHIEVED
    if due is not None and (due - today).days < AT_RISK_DAYS:
        return GoalProgress.AT_RISK
    if len(ordered) > 1:
        before = distance(comparator, target, high, ordered[-2][1])
        if distance(comparator, target, high, latest) > before:
            return GoalProgress.AT_RISK
    return GoalProgress.ON_TRACK
