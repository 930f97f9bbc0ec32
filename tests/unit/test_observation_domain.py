"""The Observation aggregate: a reading checked against the catalogue and the clock, the
canonical value, the measure's sensitivity, and the fold from Meta."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.common import Sensitivity
from schemas.observation import ObservationRecorded, ObservationSource
from services.common.commands import build
from services.common.domain import Meta
from services.common.errors import InvalidInput, StateConflict
from services.plans.domain.observation import (
    OBSERVATION,
    RecordObservation,
    decide,
    evolve,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
META = Meta("u-nurse", NOW, "t-1")
GLUCOSE, PHQ9, WEIGHT = "2339-0", "44261-6", "29463-7"


def _record(**overrides: object) -> RecordObservation:
    fields: dict[str, object] = {
        "observation_id": "o-1",
        "patient_id": "p-1",
        "measure_code": GLUCOSE,
        "value": 7.0,
        "unit": "mmol/L",
        "at": NOW - timedelta(hours=2),
        "source": "PATIENT_REPORTED",
        "recorded_by": "u-nurse",
    }
    fields.update(overrides)
    return build(RecordObservation, **fields)


def _recorded(**overrides: object) -> ObservationRecorded:
    (event,) = decide(_record(**overrides), None, NOW)
    assert isinstance(event, ObservationRecorded)
    return event


def test_a_reading_is_kept_as_given_and_in_the_canonical_unit() -> None:
    event = _recorded()
    assert (event.value, event.unit) == (7.0, "mmol/L")
    assert event.canonical_unit == "mg/dL"
    assert event.canonical_value == pytest.approx(126.1, abs=0.05)
    assert event.source is ObservationSource.PATIENT_REPORTED
    assert event.sensitivity == ()


def test_a_reading_in_the_canonical_unit_is_unchanged() -> None:
    event = _recorded(value=180.0, unit="mg/dL")
    assert event.canonical_value == 180.0


def test_pounds_become_kilograms() -> None:
    event = _recorded(measure_code=WEIGHT, value=220.0, unit="[lb_av]")
    assert event.canonical_value == pytest.approx(99.79, abs=0.01)


def test_a_phq9_carries_mental_health() -> None:
    event = _recorded(measure_code=PHQ9, value=14.0, unit="{score}")
    assert event.sensitivity == (Sensitivity.MENTAL_HEALTH,)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"measure_code": "0000-0"}, "2339-0 (Glucose"),
        ({"unit": "g/L"}, "mg/dL, mmol/L"),
        ({"value": 0.0, "unit": "mg/dL"}, "more than 0 to 3,000 mg/dL"),
        ({"value": 5000.0, "unit": "mg/dL"}, "more than 0 to 3,000 mg/dL"),
        ({"measure_code": PHQ9, "value": 28.0, "unit": "{score}"}, "from 0 to 27"),
        ({"measure_code": PHQ9, "value": 4.5, "unit": "{score}"}, "whole number"),
        ({"measure_code": WEIGHT, "value": -70.0, "unit": "kg"}, "more than 0 to 700 kg"),
    ],
)
def test_an_impossible_reading_is_refused_naming_what_is_allowed(
    overrides: dict[str, object], names: str
) -> None:
    with pytest.raises(InvalidInput, match=names.replace("(", r"\(")):
        decide(_record(**overrides), None, NOW)


def test_a_reading_a_few_minutes_ahead_of_the_clock_is_taken() -> None:
    assert _recorded(at=NOW + timedelta(minutes=4)).at == NOW + timedelta(minutes=4)


def test_a_reading_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at is in the future"):
        decide(_record(at=NOW + timedelta(minutes=6)), None, NOW)


def test_a_reading_before_2000_is_refused() -> None:
    with pytest.raises(InvalidInput, match="before 2000-01-01"):
        decide(_record(at=datetime(1999, 12, 31, 23, 59, tzinfo=UTC)), None, NOW)
    assert _recorded(at=datetime(2000, 1, 1, tzinfo=UTC)).at.year == 2000


def test_a_time_without_offset_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at "):
        _record(at=datetime(2026, 11, 22, 10, 0))


def test_the_note_is_cleaned_and_bounded() -> None:
    assert _recorded(note="  after lunch \n").note == "after lunch"
    assert _recorded(note="   ").note is None
    with pytest.raises(InvalidInput, match="note must be at most 4000 characters"):
        _record(note="x" * 4_001)
    with pytest.raises(InvalidInput, match="note"):
        _record(note="a\u202eb")


def test_an_observation_is_recorded_once() -> None:
    state = evolve(None, _recorded(), META)
    with pytest.raises(StateConflict):
        decide(_record(), state, NOW)


def test_the_fold_takes_team_and_time_from_meta() -> None:
    state = evolve(None, _recorded(measure_code=PHQ9, value=3.0, unit="{score}"), META)
    assert state.team_id == "t-1"
    assert state.recorded_at == NOW
    assert state.patients() == {"p-1": frozenset({Sensitivity.MENTAL_HEALTH})}
    assert OBSERVATION.stream_id("o-1") == "observation-o-1"
