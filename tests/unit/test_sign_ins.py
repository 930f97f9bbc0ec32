"""Refused sign-ins: which are recorded at once, which are counted, and how many records a
flood can make (services.audit.sign_ins); the record's shape and its version 1 ancestor."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import codec
from schemas.audit import AccessAction, AccessRecorded, SignInOutcome
from schemas.common import AccessOutcome, Purpose
from services.audit.sign_ins import Refusal, SignInTally, record, summary_reason
from services.common.auth import UNREADABLE, claimed_subject, mint_token

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


def _refusal(addr: str = "10.0.0.1", patient: str | None = "p-1", sub: str | None = "u") -> Refusal:
    kind = "Patient" if patient else "SignIn"
    return Refusal(
        client_addr=addr,
        reason="bad signature",
        resource_type=kind,
        resource_id=patient,
        claimed_subject=sub,
    )


def test_the_first_refusal_of_a_key_is_recorded_and_later_ones_are_counted_for_its_window() -> None:
    tally = SignInTally(window_seconds=60, max_keys=10)

    assert tally.refused(_refusal(), now=0)
    assert not tally.refused(_refusal(), now=1)
    assert not tally.refused(_refusal(), now=2)
    assert tally.due(now=59) == []
    [summary] = tally.due(now=60)

    assert summary.count == 2
    assert "2 more refused sign-in(s)" in summary_reason(summary)
    assert tally.refused(_refusal(), now=61)  # a new window: recorded at once again


def test_another_address_patient_or_claimed_subject_is_a_key_of_its_own() -> None:
    tally = SignInTally(window_seconds=60, max_keys=10)

    assert tally.refused(_refusal(), now=0)
    assert tally.refused(_refusal(addr="10.0.0.2"), now=0)
    assert tally.refused(_refusal(patient="p-2"), now=0)
    assert tally.refused(_refusal(sub="other"), now=0)


def test_past_the_key_limit_refusals_share_one_overflow_count() -> None:
    tally = SignInTally(window_seconds=60, max_keys=2)
    recorded = [tally.refused(_refusal(patient=f"p-{i}"), now=0) for i in range(10)]

    assert recorded == [True, True, True] + [False] * 7
    [overflow] = tally.due(now=60)
    assert overflow.overflow and overflow.count == 7


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.0.0.2", "::1", None]),
            st.one_of(st.none(), st.text(max_size=3)),
            st.one_of(st.none(), st.sampled_from(["u-1", "u-2", UNREADABLE])),
            st.floats(min_value=0, max_value=59.9),
        ),
        max_size=300,
    )
)
def test_a_window_of_refusals_makes_a_bounded_number_of_records_that_count_them_all(
    refusals: list[tuple[str | None, str | None, str | None, float]],
) -> None:
    tally = SignInTally(window_seconds=60, max_keys=5)
    now = 0.0
    at_once = 0
    for addr, patient, sub, step in refusals:
        now += step / 100  # all within one window
        at_once += tally.refused(_refusal(addr or "", patient, sub), now=now)
    summaries = tally.due(now=now + 60)

    assert at_once <= 5 + 1 and len(summaries) <= 5 + 1
    assert at_once + sum(s.count for s in summaries) == len(refusals)


def test_a_sign_in_record_names_the_claim_and_the_count_and_reads_back() -> None:
    made = record(_refusal(), at=AT, patient_id="p-1", refusals=3, reason="3 more")

    read = codec.decode_access(codec.encode_access(made))

    assert read == made
    assert read.schema_version == 2
    assert read.action is AccessAction.SIGN_IN and read.outcome is SignInOutcome.UNAUTHENTICATED
    assert read.claimed_subject == "u" and read.refusals == 3


def test_a_version_1_record_reads_as_version_2_without_sign_in_fields() -> None:
    v1 = (
        b'{"schema_version":1,"record_id":"r-1","at":"2026-03-01T09:00:00Z","actor_id":"u-1",'
        b'"actor_name":"Dr A","action":"read","resource_type":"CarePlan","purpose":"TREATMENT",'
        b'"outcome":"PERMIT","reason":"member"}'
    )

    read = codec.decode_access(v1)

    assert read.schema_version == 2
    assert read.claimed_subject is None and read.refusals is None


@pytest.mark.parametrize(
    "changes",
    [
        {"action": AccessAction.SIGN_IN},
        {"outcome": SignInOutcome.UNAUTHENTICATED},
        {"claimed_subject": "u-1"},
        {"refusals": 2},
    ],
)
def test_only_a_sign_in_record_has_the_sign_in_outcome_and_fields(
    changes: dict[str, object],
) -> None:
    fields: dict[str, object] = {
        "record_id": "r-1",
        "at": AT,
        "actor_id": "u-1",
        "actor_name": "Dr A",
        "action": AccessAction.READ,
        "resource_type": "CarePlan",
        "purpose": Purpose.TREATMENT,
        "outcome": AccessOutcome.PERMIT,
        "reason": "member",
    }

    with pytest.raises(ValidationError):
        AccessRecorded.model_validate({**fields, **changes})


def test_the_claimed_subject_is_the_unverified_sub_when_it_is_a_user_id() -> None:
    forged = mint_token(secret="a-forger-s-own-secret-of-enough-length", sub="dr-x", name="X")
    weird = jwt.encode({"sub": "dr\u202ex"}, SECRET, algorithm="HS256")

    assert claimed_subject(f"Bearer {forged}") == "dr-x"
    assert claimed_subject(f"Bearer {weird}") == UNREADABLE
    assert claimed_subject("Bearer not.a.token") == UNREADABLE
    assert claimed_subject("Basic abc") == UNREADABLE
    assert claimed_subject(None) is None
