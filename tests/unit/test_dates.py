"""Plausibility rules for typed dates: due dates, review dates, end and meeting times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.common import dates
from services.common.errors import InvalidInput

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def _refused(call: object, *args: object, **kwargs: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}
    return caught.value


@pytest.mark.parametrize(
    "value",
    [None, TODAY, TODAY + timedelta(days=1), date(2036, 11, 22), date(2036, 1, 1)],
)
def test_a_due_date_from_today_up_to_ten_years_ahead_is_accepted(value: date | None) -> None:
    dates.due_date(value, NOW)


@pytest.mark.parametrize("value", [TODAY - timedelta(days=1), date(2000, 1, 1)])
def test_a_due_date_in_the_past_is_refused(value: date) -> None:
    error = _refused(dates.due_date, value, NOW)
    assert error.message == f"dueDate {value.isoformat()} is in the past."


def test_a_due_date_in_the_past_names_the_argument_it_was_given() -> None:
    error = _refused(dates.due_date, TODAY - timedelta(days=1), NOW, argument="endDate")
    assert error.message.startswith("endDate ")


@pytest.mark.parametrize("value", [date(2037, 1, 1), date(2062, 11, 22)])
def test_a_due_date_in_a_year_more_than_ten_years_ahead_is_refused(value: date) -> None:
    error = _refused(dates.due_date, value, NOW)
    assert error.message == f"dueDate {value.isoformat()} is more than 10 years away."


def test_a_due_date_ten_years_and_one_day_ahead_is_refused() -> None:
    error = _refused(dates.due_date, date(2036, 11, 23), NOW)
    assert error.message == "dueDate 2036-11-23 is more than 10 years away."


def test_from_the_29th_of_february_ten_years_ahead_ends_on_the_28th() -> None:
    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    dates.due_date(date(2038, 2, 28), leap)
    _refused(dates.due_date, date(2038, 3, 1), leap)


def test_a_review_date_tomorrow_is_accepted() -> None:
    dates.review_date(TODAY + timedelta(days=1), NOW)


def test_a_review_date_366_days_ahead_is_accepted() -> None:
    dates.review_date(TODAY + timedelta(days=366), NOW)


@pytest.mark.parametrize("value", [TODAY, TODAY - timedelta(days=1)])
def test_a_review_date_today_or_earlier_is_refused(value: date) -> None:
    error = _refused(dates.review_date, value, NOW)
    assert error.message == f"nextReviewDate {value.isoformat()} must be after today."


def test_a_review_date_more_than_366_days_ahead_is_refused() -> None:
    value = TODAY + timedelta(days=367)
    error = _refused(dates.review_date, value, NOW)
    assert error.message.startswith(f"nextReviewDate {value.isoformat()} is more than a year away")


@pytest.mark.parametrize(
    "value",
    [
        None,
        NOW + timedelta(seconds=1),
        NOW + timedelta(days=30),
        datetime(2036, 11, 22, 12, tzinfo=UTC),
        datetime(2026, 11, 22, 14, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_a_future_instant_within_ten_years_is_accepted(value: datetime | None) -> None:
    dates.future_instant(value, NOW, argument="validUntil")


@pytest.mark.parametrize(
    "value",
    [
        NOW,
        NOW - timedelta(seconds=1),
        datetime(2026, 11, 22, 12, 30, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_a_future_instant_now_or_earlier_is_refused(value: datetime) -> None:
    error = _refused(dates.future_instant, value, NOW, argument="validUntil")
    assert error.message == f"validUntil {value.isoformat()} is in the past."


def test_a_future_instant_in_a_year_more_than_ten_years_ahead_is_refused() -> None:
    value = datetime(2037, 1, 1, tzinfo=UTC)
    error = _refused(dates.future_instant, value, NOW, argument="at")
    assert error.message == f"at {value.isoformat()} is more than 10 years away."


def test_a_naive_future_instant_is_refused_for_lacking_an_offset() -> None:
    error = _refused(dates.future_instant, datetime(2027, 1, 1), NOW, argument="validUntil")
    assert error.message.startswith("validUntil must include a UTC offset")


def test_aware_accepts_a_datetime_with_an_offset() -> None:
    dates.aware(NOW, argument="at")
    dates.aware(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5))), argument="at")


def test_aware_refuses_a_naive_datetime_and_names_the_argument() -> None:
    error = _refused(dates.aware, datetime(2026, 11, 23, 9), argument="meetingAt")
    assert error.message.startswith("meetingAt must include a UTC offset")


def test_a_future_instant_on_the_day_after_ten_years_ahead_is_refused() -> None:
    dates.future_instant(datetime(2036, 11, 22, 23, tzinfo=UTC), NOW, argument="validUntil")
    error = _refused(
        dates.future_instant, datetime(2036, 11, 23, tzinfo=UTC), NOW, argument="validUntil"
    )
    assert error.message.endswith("is more than 10 years away.")
