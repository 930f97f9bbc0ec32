"""The Consent aggregate: granting, revoking, the fold from Meta, and when it is in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.base import Event
from schemas.common import Discipline, Purpose, Sensitivity
from schemas.consent import ConsentGranted, ConsentRevoked
from schemas.team import TeamCreated
from services.common.commands import build
from services.common.domain import Meta
from services.common.errors import InvalidInput, StateConflict
from services.plans.domain.consent import (
    CONSENT,
    Consent,
    GrantConsent,
    RevokeConsent,
    decide,
    evolve,
)
from services.plans.domain.team import CreateTeam

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GRANTED_AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
REVOKED_AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
GRANT_META = Meta("u-1", GRANTED_AT, "t-1")
REVOKE_META = Meta("u-2", REVOKED_AT, "t-1")


def _grant(**overrides: object) -> GrantConsent:
    fields: dict[str, object] = {
        "consent_id": "c-1",
        "patient_id": "p-1",
        "categories": ("GENETIC", "GENETIC"),
        "purposes": ("TREATMENT",),
        "disciplines": ("GENETIC_COUNSELOR", "PHYSICIAN"),
        "evidence": "form-1",
    }
    fields.update(overrides)
    return build(GrantConsent, **fields)


def _granted(valid_until: datetime | None = None) -> ConsentGranted:
    return ConsentGranted(
        consent_id="c-1",
        patient_id="p-1",
        categories=(Sensitivity.GENETIC,),
        purposes=(Purpose.TREATMENT,),
        disciplines=(Discipline.GENETIC_COUNSELOR,),
        valid_until=valid_until,
        evidence="form-1",
    )


REVOKED = ConsentRevoked(consent_id="c-1", patient_id="p-1", evidence="form-2")


def _consent(*events: Event, valid_until: datetime | None = None) -> Consent:
    consent = evolve(None, _granted(valid_until), GRANT_META)
    for event in events:
        consent = evolve(consent, event, REVOKE_META)
    return consent


REVOKE = build(RevokeConsent, consent_id="c-1", evidence="form-2")


def test_granting_consent_records_consent_granted_with_distinct_lists() -> None:
    until = NOW + timedelta(days=30)
    assert decide(_grant(valid_until=until), None, NOW) == [
        ConsentGranted(
            consent_id="c-1",
            patient_id="p-1",
            categories=(Sensitivity.GENETIC,),
            purposes=(Purpose.TREATMENT,),
            disciplines=(Discipline.GENETIC_COUNSELOR, Discipline.PHYSICIAN),
            valid_until=until,
            evidence="form-1",
        )
    ]


@pytest.mark.parametrize("evidence", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_a_consent_is_granted_or_revoked_only_on_the_evidence_of_a_signed_form(
    evidence: str | None,
) -> None:
    fields = {} if evidence is None else {"evidence": evidence}
    with pytest.raises(InvalidInput) as grant:
        build(
            GrantConsent,
            consent_id="c-1",
            patient_id="p-1",
            categories=("GENETIC",),
            purposes=("TREATMENT",),
            disciplines=("PHYSICIAN",),
            **fields,
        )
    with pytest.raises(InvalidInput) as revoke:
        build(RevokeConsent, consent_id="c-1", **fields)

    for caught in (grant, revoke):
        assert caught.value.message.startswith("evidence ")
        assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


def test_an_open_ended_consent_may_be_granted() -> None:
    (event,) = decide(_grant(valid_until=None), None, NOW)
    assert isinstance(event, ConsentGranted)
    assert event.valid_until is None


@pytest.mark.parametrize(
    "valid_until",
    [NOW, NOW - timedelta(seconds=1), NOW - timedelta(days=30)],
    ids=["now", "a-second-ago", "a-month-ago"],
)
def test_a_consent_ending_now_or_in_the_past_is_refused(valid_until: datetime) -> None:
    with pytest.raises(InvalidInput) as caught:
        decide(_grant(valid_until=valid_until), None, NOW)
    assert caught.value.message == f"validUntil {valid_until.isoformat()} is in the past."
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


def test_a_consent_ending_in_a_year_more_than_ten_years_ahead_is_refused() -> None:
    with pytest.raises(InvalidInput, match="more than 10 years away"):
        decide(_grant(valid_until=datetime(2037, 1, 1, tzinfo=UTC)), None, NOW)


def test_a_consent_end_in_another_offset_is_compared_as_an_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    with pytest.raises(InvalidInput):
        decide(_grant(valid_until=datetime(2026, 11, 22, 13, 59, tzinfo=plus_two)), None, NOW)
    assert decide(_grant(valid_until=datetime(2026, 11, 22, 14, 1, tzinfo=plus_two)), None, NOW)


def test_a_naive_valid_until_is_refused_by_the_command() -> None:
    with pytest.raises(InvalidInput) as caught:
        _grant(valid_until=datetime(2027, 1, 1))
    assert caught.value.message.startswith("validUntil ")
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize("argument", ["categories", "purposes", "disciplines"])
def test_a_consent_must_name_at_least_one_of_each_list(argument: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _grant(**{argument: ()})
    assert caught.value.message == f"{argument} must name at least one value."


def test_granting_a_consent_that_exists_is_a_conflict() -> None:
    with pytest.raises(StateConflict) as caught:
        decide(_grant(), _consent(), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}


def test_revoking_a_consent_records_consent_revoked() -> None:
    assert decide(REVOKE, _consent(), NOW) == [REVOKED]


def test_revoking_a_consent_twice_is_a_conflict() -> None:
    with pytest.raises(StateConflict, match="already revoked") as caught:
        decide(REVOKE, _consent(REVOKED), NOW)
    assert caught.value.extensions == {"code": "CONFLICT"}


def test_revoking_a_consent_that_does_not_exist_is_a_conflict() -> None:
    with pytest.raises(StateConflict, match="does not exist"):
        decide(REVOKE, None, NOW)


def test_revoking_an_expired_consent_is_allowed() -> None:
    expired = _consent(valid_until=NOW - timedelta(days=1))
    assert not expired.active(NOW)
    assert decide(REVOKE, expired, NOW) == [REVOKED]


def test_a_consent_cannot_handle_a_foreign_command() -> None:
    foreign = build(CreateTeam, team_id="t", name="n", actor_id="u", actor_name="A")
    with pytest.raises(InvalidInput, match="CreateTeam"):
        decide(foreign, None, NOW)


def test_a_granted_consent_takes_team_time_and_grantor_from_meta() -> None:
    until = NOW + timedelta(days=30)
    assert _consent(valid_until=until) == Consent(
        id="c-1",
        patient_id="p-1",
        team_id="t-1",
        categories=(Sensitivity.GENETIC,),
        purposes=(Purpose.TREATMENT,),
        disciplines=(Discipline.GENETIC_COUNSELOR,),
        valid_until=until,
        granted_at=GRANTED_AT,
        granted_by="u-1",
        revoked_at=None,
        evidence="form-1",
    )


def test_a_revoked_consent_records_when_it_was_revoked_and_keeps_the_grant() -> None:
    consent = _consent(REVOKED)
    assert consent.revoked_at == REVOKED_AT
    assert (consent.revoked_by, consent.revocation_evidence) == ("u-2", "form-2")
    assert consent.evidence == "form-1"
    assert (consent.granted_at, consent.granted_by, consent.team_id) == (GRANTED_AT, "u-1", "t-1")


def test_a_revocation_before_a_grant_is_an_error() -> None:
    with pytest.raises(ValueError, match="before ConsentGranted"):
        evolve(None, REVOKED, REVOKE_META)


def test_folding_a_foreign_event_is_an_error() -> None:
    foreign = TeamCreated(team_id="t", name="n", lead_user_id="u", lead_name="A")
    with pytest.raises(ValueError, match="TeamCreated"):
        evolve(_consent(), foreign, GRANT_META)


def test_an_open_ended_consent_is_active_until_revoked() -> None:
    assert _consent().active(NOW)
    assert _consent().active(NOW + timedelta(days=3650))
    assert not _consent(REVOKED).active(NOW)


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (NOW - timedelta(seconds=1), True),
        (NOW, False),
        (NOW + timedelta(seconds=1), False),
    ],
    ids=["before-the-end", "at-the-end", "after-the-end"],
)
def test_a_consent_with_an_end_is_active_only_before_it(now: datetime, active: bool) -> None:
    assert _consent(valid_until=NOW).active(now) is active


def test_a_revoked_consent_is_inactive_even_before_its_end() -> None:
    assert not _consent(REVOKED, valid_until=NOW + timedelta(days=30)).active(NOW)


def test_the_consent_aggregate_type_names_its_stream() -> None:
    assert CONSENT.stream_id("c-1") == "consent-c-1"
    assert (CONSENT.name, CONSENT.decide, CONSENT.evolve) == ("consent", decide, evolve)
