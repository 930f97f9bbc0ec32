"""The audit export: JSON Lines round-trip, CSV that spreadsheets cannot execute, and a FHIR
R4B AuditEvent Bundle that the FHIR models accept, with the codes mapped as specified."""

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
from services.cli.audit import FORMATS
from services.fhir import audit_bundle, codes
from tests.fhir import references_in

WHEN = datetime(2024, 5, 1, 9, 30, 12, 345000, tzinfo=UTC)
GENERATED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


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


def bundle_of(entries: list[Found]) -> tuple[Bundle, dict[str, Any]]:
    """What the command writes, validated as an R4B Bundle, and the same text as JSON."""
    text = audit_bundle.fhir_text(entries, generated_at=GENERATED)
    return Bundle.model_validate_json(text), json.loads(text)


def event_of(record: AccessRecorded) -> AuditEvent:
    bundle, _ = bundle_of([found(record)])
    assert bundle.entry is not None
    resource = bundle.entry[0].resource
    assert isinstance(resource, AuditEvent)
    return resource


def purpose_codes(event: AuditEvent) -> list[tuple[str | None, str | None]]:
    (concept,) = event.purposeOfEvent or []
    return [(c.system, c.code) for c in concept.coding or []]


def test_the_formats_are_the_three_the_command_offers() -> None:
    assert FORMATS == ("jsonl", "csv", "fhir")


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


@pytest.mark.parametrize("start", ["=", "+", "-", "@"])
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


@pytest.mark.parametrize(("start", "shown"), [("\t", "<U+0009>"), ("\r", "<U+000D>")])
def test_a_csv_cell_starting_with_a_tab_or_carriage_return_shows_it_and_runs_nothing(
    start: str, shown: str
) -> None:
    record = access(actor_name=f"{start}=1+1", reason=f"{start}@SUM(A1)")
    _, row = csv.reader(export.csv_lines([found(record)]))
    cells = dict(zip(export.CSV_COLUMNS, row, strict=True))
    assert cells["actor_name"] == f"{shown}=1+1"
    assert cells["reason"] == f"{shown}@SUM(A1)"


def test_hidden_characters_stored_before_they_were_refused_are_shown_in_csv_not_written_raw() -> (
    None
):
    # Records written before typed text was checked, and user agents, may hold them.
    record = access(
        actor_name="Ada\u202eecalevoL",
        reason="line one\nline two\x1b[31m red",
        user_agent="curl\u200b/8\x9b2J",
    )
    lines = list(export.csv_lines([found(record)]))
    _, row = csv.reader(lines)
    cells = dict(zip(export.CSV_COLUMNS, row, strict=True))

    assert len(lines) == 2 and lines[1].count("\n") == 1  # one line per entry
    assert cells["actor_name"] == "Ada<U+202E>ecalevoL"
    assert cells["reason"] == "line one<U+000A>line two<U+001B>[31m red"
    assert cells["user_agent"] == "curl<U+200B>/8<U+009B>2J"
    for raw in ("\u202e", "\x1b", "\u200b", "\x9b"):
        assert raw not in "".join(lines)


def test_jsonl_escapes_hidden_characters_and_keeps_the_value() -> None:
    record = access(actor_name="Ada\u202eecalevoL", reason="a\x1b[2J\x85b\U000e0041")
    (line,) = export.jsonl_lines([found(record)])

    assert line.isprintable()
    assert "\\u202e" in line and "\\udb40\\udc41" in line
    row = json.loads(line)
    assert (row["actor_name"], row["reason"]) == (record.actor_name, record.reason)


def test_the_fhir_audit_bundle_escapes_hidden_characters_and_keeps_the_value() -> None:
    record = access(actor_name="Ada\u202eecalevoL", reason="denied\x1b[2J")
    text = audit_bundle.fhir_text([found(record)], generated_at=GENERATED)

    assert "\u202e" not in text and "\x1b" not in text
    assert "Ada\u202eecalevoL" in json.dumps(json.loads(text), ensure_ascii=False)
    Bundle.model_validate_json(text)


def test_a_csv_cell_with_a_formula_sign_later_on_is_left_alone() -> None:
    _, row = csv.reader(export.csv_lines([found(access(reason="a=b, c-d"))]))
    assert dict(zip(export.CSV_COLUMNS, row, strict=True))["reason"] == "a=b, c-d"


def test_the_fhir_bundle_of_mixed_entries_is_a_valid_r4b_bundle() -> None:
    entries = mixed()
    text = audit_bundle.fhir_text(entries, generated_at=GENERATED)
    bundle = Bundle.model_validate_json(text)
    data = json.loads(text)
    assert bundle.type == "collection"
    assert bundle.timestamp == GENERATED
    assert bundle.entry is not None and len(bundle.entry) == len(entries)
    # Each entry was validated as an AuditEvent, not merely as some resource.
    assert all(isinstance(item.resource, AuditEvent) for item in bundle.entry)
    for item, f in zip(data["entry"], entries, strict=True):
        assert item["fullUrl"] == f"urn:uuid:{f.record.record_id}"
        assert item["resource"]["resourceType"] == "AuditEvent"
        assert item["resource"]["id"] == f"2-{f.entry.seq}"
    # The Bundle carries every label its events carry, so a reader who looks no deeper
    # still knows what it tells of.
    assert bundle.meta is not None and bundle.meta.security is not None
    assert {c.code for c in bundle.meta.security} == {"GDIS", "ETH", "BH"}
    # Written as before: one indented JSON document ending in a newline.
    assert text.startswith('{\n  "resourceType": "Bundle",') and text.endswith("}\n")


def test_an_empty_export_is_a_valid_bundle_without_entries() -> None:
    bundle, data = bundle_of([])
    assert "entry" not in data and "meta" not in data
    assert not bundle.entry


def test_no_reference_in_the_bundle_points_outside_it_and_the_patient_is_named() -> None:
    # The Bundle holds only AuditEvents: a literal reference to a Patient or a CarePlan
    # would not resolve in it, so they are named by identifier instead.
    _, data = bundle_of(mixed())
    urls = {e["fullUrl"] for e in data["entry"]}
    references = references_in(data)
    assert set(references) <= urls, references
    (patient, _) = event_of(access()).entity or []
    assert patient.what is not None and patient.what.reference is None
    assert patient.what.identifier is not None
    assert (patient.what.identifier.system, patient.what.identifier.value) == (
        codes.sid("patient"),
        "p-1",
    )


def test_a_record_id_that_is_not_a_uuid_still_gets_a_urn_uuid_full_url() -> None:
    _, data = bundle_of([found(access(record_id="rec-7"))])
    url = data["entry"][0]["fullUrl"]
    assert url.startswith("urn:uuid:") and uuid.UUID(url.removeprefix("urn:uuid:"))
    # Derived from the record id, so the same entry gets the same fullUrl every time.
    _, again = bundle_of([found(access(record_id="rec-7"))])
    assert again["entry"][0]["fullUrl"] == url


def test_the_event_names_the_patient_record_type_and_the_carecoord_action() -> None:
    event = event_of(access(action=AccessAction.SUBSCRIBE_PUSH))
    assert (event.type.system, event.type.code, event.type.display) == (
        "http://dicom.nema.org/resources/ontology/DCM",
        "110110",
        "Patient Record",
    )
    assert [(c.system, c.code, c.display) for c in event.subtype or []] == [
        (
            "https://carecoord.example/fhir/CodeSystem/access-action",
            "subscribe-push",
            "subscribe-push",
        )
    ]
    assert event.recorded == WHEN


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
    assert event_of(access(action=action)).action == code


@pytest.mark.parametrize(
    "outcome", [AccessOutcome.PERMIT, AccessOutcome.PERMIT_REDACTED, AccessOutcome.BREAK_GLASS]
)
def test_a_released_access_is_a_success(outcome: AccessOutcome) -> None:
    event = event_of(access(outcome=outcome, reason="allowed"))
    assert event.outcome == "0"
    assert event.outcomeDesc == f"{outcome.value}: allowed"


def test_a_denied_access_becomes_a_minor_failure_with_its_reason() -> None:
    event = event_of(access(outcome=AccessOutcome.DENY, reason="not on the care team"))
    assert event.outcome == "4"
    assert event.outcomeDesc == "DENY: not on the care team"


def test_an_access_without_a_reason_is_described_by_its_outcome_alone() -> None:
    assert event_of(access(outcome=AccessOutcome.DENY, reason="")).outcomeDesc == "DENY"


@pytest.mark.parametrize(
    ("purpose", "coding"),
    [
        (Purpose.TREATMENT, (codes.ACT_REASON, "TREAT")),
        (Purpose.CARE_COORDINATION, (codes.ACT_REASON, "CAREMGT")),
        (Purpose.OPERATIONS, (codes.ACT_REASON, "HOPERAT")),
        (Purpose.PAYMENT, (codes.ACT_REASON, "HPAYMT")),
        (Purpose.RESEARCH, (codes.ACT_REASON, "HRESCH")),
        (Purpose.UNDERWRITING, (codes.PURPOSE_SYSTEM, "UNDERWRITING")),
        (Purpose.EMPLOYMENT, (codes.PURPOSE_SYSTEM, "EMPLOYMENT")),
    ],
)
def test_each_purpose_maps_to_a_v3_purpose_of_use_or_carecoords_own_keeping_its_name(
    purpose: Purpose, coding: tuple[str, str]
) -> None:
    # Underwriting and employment have no exact v3 code; a broader one (COVERAGE) would
    # claim more than was asked, so they keep carecoord's own code.
    event = event_of(access(purpose=purpose))
    assert purpose_codes(event) == [coding]
    assert (event.purposeOfEvent or [])[0].text == purpose.value


def test_a_break_glass_access_also_carries_emergency_treatment() -> None:
    event = event_of(access(purpose=Purpose.PAYMENT, outcome=AccessOutcome.BREAK_GLASS))
    assert purpose_codes(event) == [(codes.ACT_REASON, "HPAYMT"), (codes.ACT_REASON, "ETREAT")]
    plain = event_of(access(outcome=AccessOutcome.PERMIT))
    assert (codes.ACT_REASON, "ETREAT") not in purpose_codes(plain)


def test_the_agent_is_the_requesting_user_with_disciplines_roles_and_address() -> None:
    record = access(
        actor_roles=("clinician", "auditor"),
        actor_disciplines=(Discipline.NURSE,),
        client_addr="192.0.2.4",
    )
    (agent,) = event_of(record).agent
    assert agent.requestor is True
    assert agent.who is not None and agent.who.identifier is not None
    assert (agent.who.identifier.system, agent.who.identifier.value) == (
        "https://carecoord.example/fhir/sid/user",
        "u-7",
    )
    assert agent.who.display == "Ada Lovelace" and agent.who.reference is None
    nurse, *roles = agent.role or []
    assert [(c.system, c.code) for c in nurse.coding or []] == [
        (codes.DISCIPLINE_SYSTEM, "NURSE"),
        (codes.SNOMED, "106292003"),
    ]
    assert nurse.text == "Nurse"
    assert [(r.coding, r.text) for r in roles] == [(None, "clinician"), (None, "auditor")]
    assert agent.network is not None
    assert (agent.network.address, agent.network.type) == ("192.0.2.4", "2")
    assert agent.policy is None


def test_an_agent_without_address_roles_or_name_has_none_of_them() -> None:
    (agent,) = event_of(access(actor_roles=(), actor_disciplines=(), actor_name="")).agent
    assert agent.network is None and agent.role is None
    assert agent.name is None and agent.who is not None and agent.who.display is None


def test_the_source_is_the_carecoord_application_server() -> None:
    source = event_of(access()).source
    assert source.observer.display == "carecoord" and source.observer.reference is None
    assert [(c.system, c.code, c.display) for c in source.type or []] == [
        ("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")
    ]


def test_the_entities_are_the_patient_and_the_resource() -> None:
    record = access(request_id="req-9", correlation_id="corr-9", user_agent="curl/8")
    patient, resource = event_of(record).entity or []
    assert patient.what is not None and patient.what.identifier is not None
    assert (patient.what.type, patient.what.identifier.value) == ("Patient", "p-1")
    assert patient.type is not None and patient.type.code == "1"
    assert patient.role is not None and patient.role.code == "1"
    assert resource.what is not None and resource.what.identifier is not None
    assert resource.what.reference is None
    assert (resource.what.identifier.system, resource.what.identifier.value) == (
        codes.sid("careplan"),
        "plan-1",
    )
    assert resource.what.display == "CarePlan plan-1"
    assert resource.type is not None and resource.type.code == "2"
    assert resource.role is not None and resource.role.code == "4"
    assert [(d.type, d.valueString) for d in resource.detail or []] == [
        ("record-id", record.record_id),
        ("request-id", "req-9"),
        ("correlation-id", "corr-9"),
        ("user-agent", "curl/8"),
    ]
    assert resource.securityLabel is None


def test_an_access_without_patient_or_resource_id_names_only_the_resource_kind() -> None:
    record = access(patient_id=None, resource_id=None)
    (resource,) = event_of(record).entity or []
    assert resource.what is not None
    assert (resource.what.display, resource.what.identifier, resource.what.reference) == (
        "CarePlan",
        None,
        None,
    )
    assert [(d.type, d.valueString) for d in resource.detail or []] == [
        ("record-id", record.record_id)
    ]


def test_sensitivities_become_v3_security_labels_on_the_resource_and_the_event() -> None:
    record = access(
        sensitivity=(Sensitivity.GENETIC, Sensitivity.SUBSTANCE_USE, Sensitivity.MENTAL_HEALTH)
    )
    event = event_of(record)
    _, resource = event.entity or []
    labels = resource.securityLabel or []
    assert all(label.system == codes.ACT_CODE for label in labels)
    assert [label.code for label in labels] == ["GDIS", "ETH", "BH"]
    assert event.meta is not None
    assert [(c.system, c.code) for c in event.meta.security or []] == [
        (codes.ACT_CODE, "GDIS"),
        (codes.ACT_CODE, "ETH"),
        (codes.ACT_CODE, "BH"),
    ]
