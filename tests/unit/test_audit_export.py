"""The audit export: JSON Lines round-trip, CSV that spreadsheets cannot execute, and a FHIR
R4 AuditEvent Bundle that a FHIR model library accepts, with the codes mapped as specified."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.audit import export, store
from services.audit.reports import Found

WHEN = datetime(2024, 5, 1, 9, 30, 12, 345000, tzinfo=UTC)
GENERATED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def access(**fields: Any) -> AccessRecorded:
    values: dict[str, Any] = {
        "record_id": str(uuid.uuid4()),
        "at": WHEN,
        "actor_id": "u-7",
        "actor_name": "Ada Lovelace",
        "actor_roles": ("clinician",),
        "actor_disciplines": (Discipline.PHYSICIAN,),
        "patient_id": "p-1",
        "action": AccessAction.READ,
        "resource_type": "CarePlan",
        "resource_id": "plan-1",
        "purpose": Purpose.TREATMENT,
        "outcome": AccessOutcome.PERMIT,
        "reason": "member of the care team",
    }
    values.update(fields)
    return AccessRecorded(**values)


def found(record: AccessRecorded, *, chain: int = 2, seq: int = 17) -> Found:
    entry = store.Entry(
        at=record.at,
        chain=chain,
        seq=seq,
        record_id=record.record_id,
        key_id="k1",
        ciphertext=b"\x00cipher",
        prev_hash=b"\x01" * 32,
        hash=b"\x02" * 32,
        patient_ix=b"\x03" if record.patient_id else None,
        actor_ix=b"\x04",
        outcome=record.outcome.value,
        purpose=record.purpose.value,
        sensitivity=tuple(s.value for s in record.sensitivity),
    )
    return Found(entry=entry, record=record)


def mixed() -> list[Found]:
    """Every action, outcome, purpose and sensitivity at least once, with the optional
    fields both set and missing."""
    records = [
        access(),
        access(
            action=AccessAction.CREATE,
            purpose=Purpose.CARE_COORDINATION,
            outcome=AccessOutcome.PERMIT_REDACTED,
            sensitivity=(Sensitivity.GENETIC, Sensitivity.MENTAL_HEALTH),
            request_id="req-1",
            correlation_id="corr-1",
            client_addr="10.0.0.5",
            user_agent="Mozilla/5.0",
        ),
        access(
            action=AccessAction.UPDATE,
            purpose=Purpose.OPERATIONS,
            outcome=AccessOutcome.DENY,
            reason="not on the care team",
            actor_disciplines=(),
            actor_roles=(),
        ),
        access(
            action=AccessAction.DELETE,
            purpose=Purpose.PAYMENT,
            outcome=AccessOutcome.BREAK_GLASS,
            sensitivity=(Sensitivity.SUBSTANCE_USE,),
            reason="patient unconscious in the ED",
            at=WHEN.astimezone(timezone(timedelta(hours=-5))),
        ),
        access(action=AccessAction.EXPORT, purpose=Purpose.RESEARCH, patient_id=None),
        access(
            action=AccessAction.SUBSCRIBE_PUSH,
            purpose=Purpose.UNDERWRITING,
            outcome=AccessOutcome.DENY,
            resource_id=None,
        ),
        access(
            purpose=Purpose.EMPLOYMENT,
            outcome=AccessOutcome.DENY,
            patient_id=None,
            resource_id=None,
            actor_name="",
        ),
    ]
    return [found(r, seq=i) for i, r in enumerate(records, start=1)]


def event_of(record: AccessRecorded) -> dict[str, Any]:
    bundle = export.fhir_bundle([found(record)], generated_at=GENERATED)
    resource: dict[str, Any] = bundle["entry"][0]["resource"]
    return resource


def purpose_codes(event: dict[str, Any]) -> list[str]:
    (concept,) = event["purposeOfEvent"]
    assert all(c["system"] == ACT_REASON for c in concept.get("coding", []))
    return [c["code"] for c in concept.get("coding", [])]


def test_the_formats_are_the_three_the_command_offers() -> None:
    assert export.FORMATS == ("jsonl", "csv", "fhir")


def test_each_jsonl_line_is_the_record_with_its_entry_label() -> None:
    entries = mixed()
    lines = list(export.jsonl_lines(entries))
    assert len(lines) == len(entries)
    for line, f in zip(lines, entries, strict=True):
        assert "\n" not in line
        expected = {"entry": f.label, **f.record.model_dump(mode="json", exclude_none=True)}
        assert json.loads(line) == expected
        fields = {k: v for k, v in json.loads(line).items() if k != "entry"}
        assert AccessRecorded.model_validate(fields) == f.record


def test_a_jsonl_line_is_compact_and_leaves_out_missing_fields() -> None:
    (line,) = export.jsonl_lines([found(access())])
    assert ": " not in line and ", " not in line
    assert line.startswith('{"entry":"2:17",')
    assert "request_id" not in json.loads(line)


def test_csv_has_a_header_then_one_row_per_entry_that_parses_back() -> None:
    entries = mixed()
    lines = list(export.csv_lines(entries))
    assert len(lines) == len(entries) + 1
    assert all(line.endswith("\r\n") and line.count("\r\n") == 1 for line in lines)
    rows = list(csv.reader(lines))
    assert tuple(rows[0]) == export.CSV_COLUMNS
    assert rows[0][0] == "entry" and rows[0][-1] == "user_agent"
    second = dict(zip(export.CSV_COLUMNS, rows[2], strict=True))
    assert second["entry"] == "2:2"
    assert second["at"] == WHEN.isoformat()
    assert second["action"] == "create"
    assert second["purpose"] == "CARE_COORDINATION"
    assert second["outcome"] == "PERMIT_REDACTED"
    assert second["sensitivity"] == "GENETIC;MENTAL_HEALTH"
    assert second["client_addr"] == "10.0.0.5"
    export_row = dict(zip(export.CSV_COLUMNS, rows[5], strict=True))
    assert export_row["patient_id"] == "" and export_row["request_id"] == ""


def test_csv_joins_roles_and_disciplines_with_semicolons() -> None:
    record = access(
        actor_roles=("clinician", "auditor"),
        actor_disciplines=(Discipline.NURSE, Discipline.SOCIAL_WORKER),
    )
    _, row = csv.reader(export.csv_lines([found(record)]))
    cells = dict(zip(export.CSV_COLUMNS, row, strict=True))
    assert cells["actor_roles"] == "clinician;auditor"
    assert cells["actor_disciplines"] == "NURSE;SOCIAL_WORKER"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_csv_cell_that_would_start_a_formula_is_quoted_as_text(start: str) -> None:
    record = access(
        actor_name=f'{start}HYPERLINK("http://x")',
        reason=f"{start}1+1",
        user_agent=f"{start}cmd|' /C calc'!A0",
    )
    _, row = csv.reader(export.csv_lines([found(record)]))
    cells = dict(zip(export.CSV_COLUMNS, row, strict=True))
    assert cells["actor_name"] == f'\'{start}HYPERLINK("http://x")'
    assert cells["reason"] == f"'{start}1+1"
    assert cells["user_agent"] == f"'{start}cmd|' /C calc'!A0"


def test_a_csv_cell_with_a_formula_sign_later_on_is_left_alone() -> None:
    _, row = csv.reader(export.csv_lines([found(access(reason="a=b, c-d"))]))
    assert dict(zip(export.CSV_COLUMNS, row, strict=True))["reason"] == "a=b, c-d"


def test_the_fhir_bundle_of_mixed_entries_is_a_valid_r4_bundle() -> None:
    entries = mixed()
    data = export.fhir_bundle(entries, generated_at=GENERATED)
    bundle = Bundle.model_validate(data)
    assert bundle.type == "collection"
    assert data["timestamp"] == GENERATED.isoformat()
    assert bundle.entry is not None and len(bundle.entry) == len(entries)
    # Each entry was validated as an AuditEvent, not merely as some resource.
    assert all(isinstance(item.resource, AuditEvent) for item in bundle.entry)
    for item, f in zip(data["entry"], entries, strict=True):
        assert item["fullUrl"] == f"urn:uuid:{f.record.record_id}"
        assert item["resource"]["resourceType"] == "AuditEvent"
        assert item["resource"]["id"] == f"2-{f.entry.seq}"
    # The dict is plain JSON: what the command writes is what was validated.
    assert json.loads(json.dumps(data)) == data


def test_an_empty_export_is_a_valid_bundle_without_entries() -> None:
    data = export.fhir_bundle([], generated_at=GENERATED)
    assert "entry" not in data
    bundle = Bundle.model_validate(data)
    assert not bundle.entry


def test_the_event_names_the_patient_record_type_and_the_carecoord_action() -> None:
    event = event_of(access(action=AccessAction.SUBSCRIBE_PUSH))
    assert event["type"] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "110110",
        "display": "Patient Record",
    }
    assert event["subtype"] == [
        {
            "system": "https://carecoord.example/fhir/CodeSystem/access-action",
            "code": "subscribe-push",
            "display": "subscribe-push",
        }
    ]
    assert event["recorded"] == WHEN.isoformat()


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (AccessAction.READ, "R"),
        (AccessAction.CREATE, "C"),
        (AccessAction.UPDATE, "U"),
        (AccessAction.DELETE, "D"),
        (AccessAction.EXPORT, "R"),
        (AccessAction.SUBSCRIBE_PUSH, "R"),
    ],
)
def test_each_action_maps_to_its_fhir_action_code(action: AccessAction, code: str) -> None:
    assert event_of(access(action=action))["action"] == code


@pytest.mark.parametrize(
    "outcome", [AccessOutcome.PERMIT, AccessOutcome.PERMIT_REDACTED, AccessOutcome.BREAK_GLASS]
)
def test_a_released_access_is_a_success(outcome: AccessOutcome) -> None:
    event = event_of(access(outcome=outcome, reason="allowed"))
    assert event["outcome"] == "0"
    assert event["outcomeDesc"] == f"{outcome.value}: allowed"


def test_a_denied_access_becomes_a_minor_failure_with_its_reason() -> None:
    event = event_of(access(outcome=AccessOutcome.DENY, reason="not on the care team"))
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "DENY: not on the care team"


@pytest.mark.parametrize(
    ("purpose", "code"),
    [
        (Purpose.TREATMENT, "TREAT"),
        (Purpose.CARE_COORDINATION, "CAREMGT"),
        (Purpose.OPERATIONS, "HOPERAT"),
        (Purpose.PAYMENT, "HPAYMT"),
        (Purpose.RESEARCH, "HRESCH"),
        (Purpose.UNDERWRITING, "COVERAGE"),
        (Purpose.EMPLOYMENT, None),
    ],
)
def test_each_purpose_maps_to_a_v3_purpose_of_use_keeping_its_own_name(
    purpose: Purpose, code: str | None
) -> None:
    # Employment has no v3 purpose-of-use code: it is named in the text alone.
    event = event_of(access(purpose=purpose))
    assert purpose_codes(event) == ([] if code is None else [code])
    assert event["purposeOfEvent"][0]["text"] == purpose.value


def test_a_break_glass_access_also_carries_emergency_treatment() -> None:
    event = event_of(access(purpose=Purpose.PAYMENT, outcome=AccessOutcome.BREAK_GLASS))
    assert purpose_codes(event) == ["HPAYMT", "ETREAT"]
    assert "ETREAT" not in purpose_codes(event_of(access(outcome=AccessOutcome.PERMIT)))


def test_the_agent_is_the_requesting_user_with_disciplines_roles_and_address() -> None:
    record = access(
        actor_roles=("clinician", "auditor"),
        actor_disciplines=(Discipline.NURSE,),
        client_addr="192.0.2.4",
    )
    (agent,) = event_of(record)["agent"]
    assert agent["requestor"] is True
    assert agent["who"] == {
        "identifier": {"system": "https://carecoord.example/fhir/sid/user", "value": "u-7"},
        "display": "Ada Lovelace",
    }
    assert agent["role"] == [{"text": "NURSE"}, {"text": "clinician"}, {"text": "auditor"}]
    assert agent["network"] == {"address": "192.0.2.4", "type": "2"}
    assert "policy" not in agent


def test_an_agent_without_address_or_roles_has_neither() -> None:
    (agent,) = event_of(access(actor_roles=(), actor_disciplines=()))["agent"]
    assert "network" not in agent and "role" not in agent


def test_the_source_is_the_carecoord_application_server() -> None:
    assert event_of(access())["source"] == {
        "observer": {"display": "carecoord"},
        "type": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }
        ],
    }


def test_the_entities_are_the_patient_and_the_resource() -> None:
    patient, resource = event_of(access(request_id="req-9", correlation_id="corr-9"))["entity"]
    assert patient["what"] == {"reference": "Patient/p-1"}
    assert patient["type"]["code"] == "1" and patient["role"]["code"] == "1"
    assert resource["what"] == {"reference": "CarePlan/plan-1"}
    assert resource["type"]["code"] == "2" and resource["role"]["code"] == "4"
    assert resource["detail"] == [
        {"type": "request-id", "valueString": "req-9"},
        {"type": "correlation-id", "valueString": "corr-9"},
    ]
    assert "securityLabel" not in resource


def test_an_access_without_patient_or_resource_id_names_only_the_resource_kind() -> None:
    (resource,) = event_of(access(patient_id=None, resource_id=None))["entity"]
    assert resource["what"] == {"display": "CarePlan"}
    assert "detail" not in resource


def test_sensitivities_become_v3_security_labels_on_the_resource() -> None:
    record = access(
        sensitivity=(Sensitivity.GENETIC, Sensitivity.SUBSTANCE_USE, Sensitivity.MENTAL_HEALTH)
    )
    _, resource = event_of(record)["entity"]
    labels = resource["securityLabel"]
    assert all(label["system"] == ACT_CODE for label in labels)
    assert [label["code"] for label in labels] == ["GDIS", "ETH", "BH"]
