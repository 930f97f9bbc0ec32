"""The README walk moves every date and date-time in the README's code blocks by exactly the
days asked, each in its own format, so the walk-through runs on any day."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest

from tests.readme import README, WRITTEN_ON, first_session_text, shifted

# Broader than the walk's own pattern on purpose: anything shaped like a date, wherever it
# sits (no boundaries), with whatever time and offset follow it.
_DATE_LIKE = re.compile(r"(\d{4}-\d{2}-\d{2})([T ]\d{2}:\d{2}[\d:.]*(?:Z|[+-]\d{2}:?\d{2})?)?")
# Every fenced block, with or without a language.
_FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
BLOCKS = _FENCED.findall(README.read_text(encoding="utf-8"))
DATED = [block for block in BLOCKS if _DATE_LIKE.search(block)]
OFFSETS = [0, 10, 400, 3_000]


def _parsed(day: str, rest: str) -> date | datetime:
    return datetime.fromisoformat(day + rest) if rest else date.fromisoformat(day)


def test_the_readmes_blocks_hold_dates_and_a_date_time_with_its_offset() -> None:
    literals = [m for block in DATED for m in _DATE_LIKE.findall(block)]
    assert len(DATED) >= 3
    assert any(rest and _parsed(day, rest).utcoffset() is not None for day, rest in literals)
    assert all(block in BLOCKS for block in _FENCED.findall(first_session_text()))


def test_the_readme_says_the_day_its_examples_were_written_on() -> None:
    assert f"written on {WRITTEN_ON.isoformat()}" in first_session_text()


@pytest.mark.parametrize("days", OFFSETS)
@pytest.mark.parametrize("block", DATED, ids=lambda b: b.split("(")[0].strip()[:40])
def test_every_date_in_a_readme_block_moves_by_exactly_the_offset_and_keeps_its_format(
    block: str, days: int
) -> None:
    moved = shifted(block, days)

    before, after = _DATE_LIKE.findall(block), _DATE_LIKE.findall(moved)
    assert len(after) == len(before)
    for (old_day, old_rest), (new_day, new_rest) in zip(before, after, strict=True):
        assert new_rest == old_rest, "a date-time keeps its time and offset"
        assert type(_parsed(new_day, new_rest)) is type(_parsed(old_day, old_rest))
        moved_by = date.fromisoformat(new_day) - date.fromisoformat(old_day)
        assert moved_by == timedelta(days=days), f"{old_day}{old_rest} -> {new_day}{new_rest}"
    assert _DATE_LIKE.sub("", moved) == _DATE_LIKE.sub("", block)


@pytest.mark.parametrize(
    ("text", "days", "expected"),
    [
        ('at: "2026-11-26T08:30:00-05:00"', 10, 'at: "2026-12-06T08:30:00-05:00"'),
        ('"2026-11-26T08:30:00Z"', 400, '"2027-12-31T08:30:00Z"'),
        ("2026-11-26T08:30:00.250+05:30", 3_000, "2035-02-12T08:30:00.250+05:30"),
        ("2026-12-31T23:59+14:00", 1, "2027-01-01T23:59+14:00"),
        ('dueDate: "2028-02-28")', 1, 'dueDate: "2028-02-29")'),
        ("from 2026-11-22 to 2026-11-23.", 3_000, "from 2035-02-08 to 2035-02-09."),
    ],
)
def test_dates_and_date_times_of_every_iso_form_move_by_whole_days(
    text: str, days: int, expected: str
) -> None:
    assert shifted(text, days) == expected


def test_something_shaped_like_a_date_that_is_none_is_refused_rather_than_left_behind() -> None:
    with pytest.raises(ValueError, match="'2027-02-30' looks like a date but is none"):
        shifted('dueDate: "2027-02-30"', 1)
