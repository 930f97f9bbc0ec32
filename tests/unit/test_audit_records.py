"""Building access records from a request, collecting one operation's records (one per
patient, merged), and the paging cursors of the audit trail."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.audit import store
from services.audit.records import AccessLog, Requester, Touch, build, records_for
from services.audit.reports import decode_cursor, encode_cursor
from services.common.actor import Actor
from services.common.errors import InvalidInput

AT = datetime(2024, 5, 1, 9, 30, 12, 345678, tzinfo=UTC)
ACTOR = Actor("u-7", "Ada Lovelace", roles=frozenset({"clinician", "admin"}))
REQUESTER = Requester(
    actor=ACTOR,
    purpose=Purpose.TREATMENT,
    request_id="req-1",
    correlation_id="corr-1",
    client_addr="192.0.2.10",
    user_agent="pytest/8",
)
G, S, M = Sensitivity.GENETIC, Sensitivity.SUBSTANCE_USE, Sensitivity.MENTAL_HEALTH


def touch(outcome: AccessOutcome = AccessOutcome.PERMIT, **fields: Any) -> Touch:
    values: dict[str, Any] = {
        "action": AccessAction.READ,
        "resource_type": "CarePlan",
        "resource_id": "plan-1",
        "outcome": outcome,
        "reason": "member of the care team",
    }
    values.update(fields)
    return Touch(**values)


def one(outcome: AccessOutcome, *sensitivity: Sensitivity, patient: str = "p-1") -> AccessRecorded:
    return build(REQUESTER, touch(outcome), patient_id=patient, sensitivity=sensitivity, at=AT)


# --- records_for ----------------------------------------------------------------------


def test_each_patient_touched_gets_one_record_with_its_sensitivities_sorted() -> None:
    patients = {"p-1": frozenset({M, G, S}), "p-2": frozenset()}

    records = records_for(REQUESTER, touch(), patients, at=AT)

    assert sorted((r.patient_id, r.sensitivity) for r in records) == [
        ("p-1", (G, M, S)),
        ("p-2", ()),
    ]
    assert len({r.record_id for r in records}) == 2


def test_a_permitted_access_that_reached_no_patient_is_not_recorded() -> None:
    assert records_for(REQUESTER, touch(AccessOutcome.PERMIT), {}, at=AT) == []


def test_a_refusal_that_reached_no_patient_is_recorded_without_one() -> None:
    records = records_for(REQUESTER, touch(AccessOutcome.DENY, resource_id=None), {}, at=AT)

    assert len(records) == 1
    assert records[0].patient_id is None
    assert records[0].outcome is AccessOutcome.DENY
    assert records[0].sensitivity == ()


def test_a_standalone_access_is_recorded_without_a_patient() -> None:
    access = touch(resource_type="AuditLog", resource_id=None, standalone=True)

    records = records_for(REQUESTER, access, {}, at=AT)

    assert [(r.patient_id, r.resource_type) for r in records] == [(None, "AuditLog")]


def test_a_record_carries_the_request_and_the_actor() -> None:
    access = touch(disciplines=frozenset({Discipline.PHYSICIAN, Discipline.NURSE}))

    (record,) = records_for(REQUESTER, access, {"p-1": frozenset()}, at=AT)

    assert (record.request_id, record.correlation_id) == ("req-1", "corr-1")
    assert (record.client_addr, record.user_agent) == ("192.0.2.10", "pytest/8")
    assert (record.actor_id, record.actor_name) == ("u-7", "Ada Lovelace")
    assert record.actor_roles == ("admin", "clinician")
    assert record.actor_disciplines == (Discipline.NURSE, Discipline.PHYSICIAN)
    assert (record.purpose, record.at, record.action) == (Purpose.TREATMENT, AT, AccessAction.READ)
    assert (record.resource_type, record.resource_id) == ("CarePlan", "plan-1")


def test_a_long_user_agent_is_cut_to_512_characters() -> None:
    requester = Requester(ACTOR, Purpose.TREATMENT, user_agent="x" * 2000)

    record = build(requester, touch(), patient_id="p-1", sensitivity=(), at=AT)

    assert record.user_agent == "x" * 512


def test_an_empty_user_agent_is_left_out() -> None:
    requester = Requester(ACTOR, Purpose.TREATMENT, user_agent="")

    record = build(requester, touch(), patient_id="p-1", sensitivity=(), at=AT)

    assert record.user_agent is None
    assert record.request_id is None and record.client_addr is None


def test_a_long_reason_is_cut_to_2000_characters() -> None:
    record = build(REQUESTER, touch(reason="r" * 5000), patient_id="p-1", sensitivity=(), at=AT)

    assert record.reason == "r" * 2000


# --- AccessLog ------------------------------------------------------------------------


def test_two_records_of_one_patient_merge_with_the_union_of_sensitivities() -> None:
    log = AccessLog()

    log.add([one(AccessOutcome.PERMIT, G)])
    log.add([one(AccessOutcome.PERMIT, M, G)])

    assert len(log) == 1
    (merged,) = log.drain()
    assert merged.sensitivity == (G, M)


WEIGHTIEST = [
    (AccessOutcome.PERMIT, AccessOutcome.PERMIT_REDACTED),
    (AccessOutcome.PERMIT, AccessOutcome.BREAK_GLASS),
    (AccessOutcome.PERMIT_REDACTED, AccessOutcome.BREAK_GLASS),
]


@pytest.mark.parametrize(("lighter", "weightier"), WEIGHTIEST)
@pytest.mark.parametrize("weightier_first", [True, False], ids=["weightier_first", "lighter_first"])
def test_a_merged_record_keeps_the_weightiest_outcome(
    lighter: AccessOutcome, weightier: AccessOutcome, weightier_first: bool
) -> None:
    light, heavy = one(lighter, S), one(weightier, G)
    log = AccessLog()

    log.add([heavy, light] if weightier_first else [light, heavy])

    (merged,) = log.drain()
    assert merged.outcome is weightier
    assert merged.record_id == heavy.record_id
    assert merged.sensitivity == (G, S)


@pytest.mark.parametrize(
    "released", [AccessOutcome.PERMIT, AccessOutcome.PERMIT_REDACTED, AccessOutcome.BREAK_GLASS]
)
def test_a_refusal_never_hides_a_release_of_the_same_patient(released: AccessOutcome) -> None:
    log = AccessLog()

    log.add([one(released, G), one(AccessOutcome.DENY, S)])

    assert sorted(r.outcome for r in log.drain()) == sorted([released, AccessOutcome.DENY])


def test_records_of_different_patients_stay_apart() -> None:
    log = AccessLog()

    log.add([one(AccessOutcome.PERMIT, patient="p-1"), one(AccessOutcome.DENY, patient="p-2")])

    assert sorted((r.patient_id, r.outcome) for r in log.drain()) == [
        ("p-1", AccessOutcome.PERMIT),
        ("p-2", AccessOutcome.DENY),
    ]


def test_patientless_records_for_different_resources_stay_apart() -> None:
    log = AccessLog()
    denied = [touch(AccessOutcome.DENY, resource_id=r) for r in ("plan-1", "plan-2")]
    other_type = touch(AccessOutcome.DENY, resource_type="Task")

    for access in [*denied, other_type]:
        log.add(records_for(REQUESTER, access, {}, at=AT))

    assert sorted((r.resource_type, r.resource_id) for r in log.drain()) == [
        ("CarePlan", "plan-1"),
        ("CarePlan", "plan-2"),
        ("Task", "plan-1"),
    ]


def test_patientless_refusals_of_one_resource_merge() -> None:
    log = AccessLog()

    for _ in range(3):
        log.add(records_for(REQUESTER, touch(AccessOutcome.DENY), {}, at=AT))

    assert len(log) == 1


def test_draining_empties_the_log() -> None:
    log = AccessLog()
    log.add([one(AccessOutcome.PERMIT, patient="p-1"), one(AccessOutcome.PERMIT, patient="p-2")])

    assert len(log.drain()) == 2
    assert len(log) == 0
    assert log.drain() == []


# --- cursors --------------------------------------------------------------------------


def _entry(chain: int, seq: int) -> store.Entry:
    return store.Entry(
        at=AT,
        chain=chain,
        seq=seq,
        record_id="r-1",
        key_id="k1",
        ciphertext=b"\x00",
        prev_hash=bytes(32),
        hash=bytes(32),
        patient_ix=None,
        actor_ix=b"\x01",
        outcome="PERMIT",
        purpose="TREATMENT",
        sensitivity=(),
    )


@pytest.mark.parametrize(("chain", "seq"), [(0, 1), (3, 17), (2**31 - 1, 2**62)])
def test_a_cursor_decodes_to_the_position_it_was_made_from(chain: int, seq: int) -> None:
    cursor = encode_cursor(_entry(chain, seq))

    assert decode_cursor(cursor) == (AT, chain, seq)
    assert "=" not in cursor


def _b64(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode()


GARBAGE = {
    "empty": "",
    "punctuation": "!!!",
    "one_char": "a",
    "not_a_cursor": _b64(b"not a cursor"),
    "not_utf8": _b64(b"\xff\xfe\xfd"),
    "bad_date": _b64(b"yesterday|1|2"),
    "bad_chain": _b64(b"2024-05-01T09:30:00+00:00|one|2"),
    "too_many_parts": _b64(b"2024-05-01T09:30:00+00:00|1|2|3"),
    "non_ascii": "curs\u00e9r",
}


@pytest.mark.parametrize("cursor", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_garbage_cursor_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        decode_cursor(cursor)


def test_a_cursor_with_a_time_without_offset_is_refused() -> None:
    forged = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|1|2").decode().rstrip("=")
    with pytest.raises(InvalidInput):
        decode_cursor(forged)


def test_a_merged_record_keeps_each_distinct_reason_once() -> None:
    log = AccessLog()
    released = build(
        REQUESTER,
        touch(reason="consent c-1 covers GENETIC"),
        patient_id="p-1",
        sensitivity=[G],
        at=AT,
    )
    redacted = build(
        REQUESTER,
        touch(AccessOutcome.PERMIT_REDACTED, reason="no consent covers SUBSTANCE_USE"),
        patient_id="p-1",
        sensitivity=[S],
        at=AT,
    )

    log.add([released, redacted, released])

    [record] = log.drain()
    assert record.outcome is AccessOutcome.PERMIT_REDACTED
    assert record.reason == "no consent covers SUBSTANCE_USE; consent c-1 covers GENETIC"
    assert record.sensitivity == tuple(sorted([G, S]))
