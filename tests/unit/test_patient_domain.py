"""The Patient aggregate: enrolment rules, the fold, and the MRN uniqueness key."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from schemas.patient import PatientEnrolled
from schemas.team import TeamCreated
from services.common.commands import build
from services.common.domain import Meta
from services.common.errors import InvalidInput, StateConflict
from services.plans.domain.patient import (
    OLDEST_AGE_YEARS,
    PATIENT,
    EnrollPatient,
    Patient,
    decide,
    evolve,
    mrn_key,
)
from services.plans.domain.team import CreateTeam

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
META = Meta("u-1", NOW, "t-1")


def _enroll(birth_date: date = date(1970, 5, 17), **overrides: object) -> EnrollPatient:
    fields: dict[str, object] = {
        "patient_id": "p-1",
        "team_id": "t-1",
        "mrn": "MRN-001",
        "name": "Ada Example",
        "birth_date": birth_date,
    }
    fields.update(overrides)
    return build(EnrollPatient, **fields)


def _enrolled() -> Patient:
    return evolve(None, decide(_enroll(), None, NOW)[0], META)


def test_enrolling_a_new_patient_records_patient_enrolled() -> None:
    events = decide(_enroll(), None, NOW)
    assert events == [
        PatientEnrolled(
            patient_id="p-1",
            team_id="t-1",
            mrn="MRN-001",
            name="Ada Example",
            birth_date=date(1970, 5, 17),
        )
    ]


def test_enrolling_trims_the_typed_text() -> None:
    (event,) = decide(_enroll(mrn="  MRN-001 ", name=" Ada Example\t"), None, NOW)
    assert isinstance(event, PatientEnrolled)
    assert (event.mrn, event.name) == ("MRN-001", "Ada Example")


def test_enrolling_an_already_enrolled_patient_is_a_conflict() -> None:
    with pytest.raises(StateConflict) as caught:
        decide(_enroll(), _enrolled(), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}
    assert "p-1" in caught.value.message


def test_a_patient_born_yesterday_can_be_enrolled() -> None:
    (event,) = decide(_enroll(birth_date=TODAY - timedelta(days=1)), None, NOW)
    assert isinstance(event, PatientEnrolled)
    assert event.birth_date == TODAY - timedelta(days=1)


@pytest.mark.parametrize("birth_date", [TODAY + timedelta(days=2), date(2030, 1, 1)], ids=str)
def test_a_birth_date_in_the_future_everywhere_is_refused(birth_date: date) -> None:
    with pytest.raises(InvalidInput) as caught:
        decide(_enroll(birth_date=birth_date), None, NOW)
    assert caught.value.message == "birthDate is in the future."
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}
    assert birth_date.isoformat() not in caught.value.message


@pytest.mark.parametrize("birth_date", [TODAY, TODAY + timedelta(days=1)], ids=str)
def test_a_newborn_born_today_somewhere_on_earth_is_enrolled(birth_date: date) -> None:
    # At noon UTC it is already tomorrow in UTC+14 (Kiribati).
    assert decide(_enroll(birth_date=birth_date), None, NOW)


def test_a_birth_date_exactly_130_years_ago_is_accepted() -> None:
    assert OLDEST_AGE_YEARS == 130
    decide(_enroll(birth_date=date(1896, 11, 22)), None, NOW)


@pytest.mark.parametrize("birth_date", [date(1895, 12, 31), date(1800, 1, 1)], ids=str)
def test_a_birth_date_in_a_year_more_than_130_years_back_is_refused(birth_date: date) -> None:
    with pytest.raises(InvalidInput) as caught:
        decide(_enroll(birth_date=birth_date), None, NOW)
    assert caught.value.message == "birthDate is more than 130 years ago; check the year."
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


def test_a_birth_date_130_years_and_one_day_ago_is_refused() -> None:
    with pytest.raises(InvalidInput):
        decide(_enroll(birth_date=date(1896, 11, 21)), None, NOW)


def test_a_patient_cannot_handle_a_foreign_command() -> None:
    foreign = build(CreateTeam, team_id="t", name="n", actor_id="u", actor_name="A")
    with pytest.raises(InvalidInput, match="CreateTeam"):
        decide(foreign, None, NOW)


def test_folding_patient_enrolled_builds_the_patient() -> None:
    assert _enrolled() == Patient(
        id="p-1",
        team_id="t-1",
        mrn="MRN-001",
        name="Ada Example",
        birth_date=date(1970, 5, 17),
    )


def test_evolve_does_not_need_meta() -> None:
    patient = evolve(None, decide(_enroll(), None, NOW)[0])
    assert patient.id == "p-1"


def test_folding_a_foreign_event_is_an_error() -> None:
    foreign = TeamCreated(team_id="t", name="n", lead_user_id="u", lead_name="A")
    with pytest.raises(ValueError, match="TeamCreated"):
        evolve(_enrolled(), foreign, META)


def test_the_patient_aggregate_type_names_its_stream() -> None:
    assert PATIENT.name == "patient"
    assert PATIENT.stream_id("p-1") == "patient-p-1"
    assert PATIENT.decide is decide
    assert PATIENT.evolve is evolve


@pytest.mark.parametrize(
    ("mrn", "same_as"),
    [
        ("MRN-001", "mrn-001"),
        ("MRN 001", "MRN001"),
        (" mrn\t0 01 ", "MRN001"),
        ("abc", "ABC"),
    ],
)
def test_mrn_key_ignores_case_and_whitespace(mrn: str, same_as: str) -> None:
    assert mrn_key("t-1", mrn) == mrn_key("t-1", same_as)


def test_mrn_key_is_upper_case_without_spaces_and_scoped_by_team() -> None:
    assert mrn_key("t-1", " ab 12 ") == "t-1\x1fAB12"


def test_the_same_mrn_on_different_teams_has_different_keys() -> None:
    assert mrn_key("t-1", "MRN-001") != mrn_key("t-2", "MRN-001")


def test_team_and_mrn_cannot_be_shifted_into_each_other() -> None:
    assert mrn_key("t-1", "2X") != mrn_key("t-12", "X")


def test_different_mrns_have_different_keys() -> None:
    assert mrn_key("t-1", "MRN-001") != mrn_key("t-1", "MRN-0010")
