"""Plausibility rules for the dates clinicians type (due, review, end and birth dates), and
the range of calendar days that count as "today" somewhere on Earth.

A date typed in a clinic is that clinic's calendar day, which the server (judging by
UTC) does not know. So "today" is a range: from the earliest calendar day anywhere on
Earth (UTC-12) to the latest (UTC+14). A date is refused as past only when it is past
everywhere, and as future only when it is future everywhere.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.common.errors import InvalidInput

# Farther ahead than this is almost surely a typing error (2062 for 2026).
MAX_YEARS_AHEAD = 10
MAX_REVIEW_DAYS_AHEAD = 366


def utcnow() -> datetime:
    """The real clock, for wherever a clock is injected (tests pass one of their own)."""
    return datetime.now(UTC)


def years_later(day: date, years: int) -> date:
    """The same day `years` later (earlier when negative); 29 February falls back to the 28th."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February, in a year without one
        return day.replace(year=day.year + years, day=28)


def earliest_today(now: datetime) -> date:
    """The calendar day in the westernmost time zone (UTC-12)."""
    return (now.astimezone(UTC) - timedelta(hours=12)).date()


def latest_today(now: datetime) -> date:
    """The calendar day in the easternmost time zone (UTC+14)."""
    return (now.astimezone(UTC) + timedelta(hours=14)).date()


def due_date(
    value: date | None, now: datetime, *, argument: str = "dueDate", days_back: int = 0
) -> None:
    """A due date may be today (or up to `days_back` days before) or later, up to
    MAX_YEARS_AHEAD years away."""
    if value is None:
        return
    if value < earliest_today(now) - timedelta(days=days_back):
        if days_back:
            raise InvalidInput(
                f"{argument} {value.isoformat()} is more than {days_back} days in the past."
            )
        raise InvalidInput(f"{argument} {value.isoformat()} is in the past.")
    # Ceilings catch typos; a day more or less around the world does not matter to them.
    if value > years_later(now.astimezone(UTC).date(), MAX_YEARS_AHEAD):
        raise InvalidInput(
            f"{argument} {value.isoformat()} is more than {MAX_YEARS_AHEAD} years away."
        )


def review_date(value: date, now: datetime) -> None:
    """The next review is after today and within a year (plans are reviewed every 1-3 months)."""
    if value <= earliest_today(now):
        raise InvalidInput(f"nextReviewDate {value.isoformat()} must be after today.")
    if value > now.astimezone(UTC).date() + timedelta(days=MAX_REVIEW_DAYS_AHEAD):
        raise InvalidInput(
            f"nextReviewDate {value.isoformat()} is more than a year away; "
            "care plans are reviewed at least yearly."
        )


def future_instant(value: datetime | None, now: datetime, *, argument: str) -> None:
    """An end or meeting time: must carry its UTC offset, and not lie in the past."""
    if value is None:
        return
    aware(value, argument=argument)
    if value <= now:
        raise InvalidInput(f"{argument} {value.isoformat()} is in the past.")
    if value.date() > years_later(now.date(), MAX_YEARS_AHEAD):
        raise InvalidInput(
            f"{argument} {value.isoformat()} is more than {MAX_YEARS_AHEAD} years away."
        )


def aware(value: datetime, *, argument: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"{argument} must include a UTC offset, e.g. 2026-11-24T09:00:00+01:00 or ...Z."
        )
