"""Rendering audit-log entries for a compliance officer's export: JSON Lines, CSV, or a
FHIR R4 Bundle of AuditEvent resources (`carecoord audit export --format jsonl|csv|fhir`).

Pure functions over already-decrypted entries: no I/O, no database, no keys.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose, Sensitivity
from services.audit.reports import Found

FORMATS = ("jsonl", "csv", "fhir")

CSV_COLUMNS = (
    "entry",
    "at",
    "actor_id",
    "actor_name",
    "actor_roles",
    "actor_disciplines",
    "patient_id",
    "action",
    "resource_type",
    "resource_id",
    "purpose",
    "outcome",
    "reason",
    "sensitivity",
    "request_id",
    "correlation_id",
    "client_addr",
    "user_agent",
)
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV
# injection"); actor names, reasons and user agents come from outside, so none may.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ACTION_SYSTEM = "https://carecoord.example/fhir/CodeSystem/access-action"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
USER_SYSTEM = "https://carecoord.example/fhir/sid/user"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

# AuditEvent.action is only C/R/U/D/E; an export and a push subscription both hand data out,
# which is a read of it.
_FHIR_ACTION = {
    AccessAction.READ: "R",
    AccessAction.CREATE: "C",
    AccessAction.UPDATE: "U",
    AccessAction.DELETE: "D",
    AccessAction.EXPORT: "R",
    AccessAction.SUBSCRIBE_PUSH: "R",
}

# HL7 v3 PurposeOfUse (ActReason) codes with their displays. The v3 value set has no code
# for underwriting or for employment, so those two take the nearest real code and keep the
# exact carecoord purpose in CodeableConcept.text:
# - UNDERWRITING -> COVERAGE ("coverage under policy or program", under HPAYMT): underwriting
#   is deciding whether, and on what terms, a policy covers someone.
# - EMPLOYMENT -> no coding, the text only: no concept of the value set is about
#   employment (ActReason's EMPLOY is a coverage *eligibility* reason, not a purpose of
#   use), so the export claims no code it cannot back.
_PURPOSE: dict[Purpose, tuple[str, str] | None] = {
    Purpose.TREATMENT: ("TREAT", "treatment"),
    Purpose.CARE_COORDINATION: ("CAREMGT", "care management"),
    Purpose.OPERATIONS: ("HOPERAT", "healthcare operations"),
    Purpose.PAYMENT: ("HPAYMT", "healthcare payment"),
    Purpose.RESEARCH: ("HRESCH", "healthcare research"),
    Purpose.UNDERWRITING: ("COVERAGE", "coverage under policy or program"),
    Purpose.EMPLOYMENT: None,
}
_EMERGENCY = {"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}

# v3 ActCode information-sensitivity codes, the security labels for sensitive data.
_SENSITIVITY = {
    Sensitivity.GENETIC: ("GDIS", "genetic disease information sensitivity"),
    Sensitivity.SUBSTANCE_USE: ("ETH", "substance abuse information sensitivity"),
    Sensitivity.MENTAL_HEALTH: ("BH", "behavioral health information sensitivity"),
}


def jsonl_lines(found: Iterable[Found]) -> Iterator[str]:
    """One compact JSON object per entry, without its newline: the entry's label, then the
    record's fields as they travel (fields without a value left out)."""
    for f in found:
        row = {"entry": f.label, **f.record.model_dump(mode="json", exclude_none=True)}
        yield json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def csv_lines(found: Iterable[Found]) -> Iterator[str]:
    """A header line, then one line per entry, each ending in the '\\r\\n' csv writes; lists
    are joined with ';' and no cell can start a spreadsheet formula."""
    yield _csv_row(CSV_COLUMNS)
    for f in found:
        yield _csv_row([_defuse(cell) for cell in _csv_cells(f)])


def _csv_cells(f: Found) -> list[str]:
    r = f.record
    return [
        f.label,
        r.at.isoformat(),
        r.actor_id,
        r.actor_name,
        ";".join(r.actor_roles),
        ";".join(r.actor_disciplines),
        r.patient_id or "",
        r.action.value,
        r.resource_type,
        r.resource_id or "",
        r.purpose.value,
        r.outcome.value,
        r.reason,
        ";".join(r.sensitivity),
        r.request_id or "",
        r.correlation_id or "",
        r.client_addr or "",
        r.user_agent or "",
    ]


def _defuse(cell: str) -> str:
    # A leading quote makes spreadsheets show the cell as text; the value stays readable.
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _csv_row(cells: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue()


def fhir_bundle(found: Iterable[Found], *, generated_at: datetime) -> dict[str, Any]:
    """A FHIR R4 Bundle (type collection) with one AuditEvent per entry."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": generated_at.isoformat(),
    }
    entries = [
        {"fullUrl": f"urn:uuid:{f.record.record_id}", "resource": audit_event(f)} for f in found
    ]
    # FHIR forbids empty arrays: a bundle with nothing to carry has no entry element at all.
    if entries:
        bundle["entry"] = entries
    return bundle


def audit_event(f: Found) -> dict[str, Any]:
    """One entry as a FHIR R4 AuditEvent."""
    r = f.record
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        # FHIR ids allow letters, digits, '-' and '.', so 'chain:seq' becomes 'chain-seq'.
        "id": f.label.replace(":", "-"),
        "type": {"system": DICOM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": ACTION_SYSTEM, "code": r.action.value, "display": r.action.value}],
        "action": _FHIR_ACTION[r.action],
        "recorded": r.at.isoformat(),
        # 0 = success; 4 = minor failure, which is what AuditEvent calls a refused request.
        "outcome": "4" if r.outcome is AccessOutcome.DENY else "0",
        "outcomeDesc": f"{r.outcome.value}: {r.reason}",
        "purposeOfEvent": [_purpose(r)],
        "agent": [_agent(r)],
        "source": {
            "observer": {"display": "carecoord"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    entities = _entities(r)
    if entities:
        event["entity"] = entities
    return event


def _purpose(r: AccessRecorded) -> dict[str, Any]:
    known = _PURPOSE[r.purpose]
    coding = (
        [] if known is None else [{"system": ACT_REASON, "code": known[0], "display": known[1]}]
    )
    # A break-glass access is emergency treatment whatever purpose the actor gave.
    if r.outcome is AccessOutcome.BREAK_GLASS:
        coding.append(_EMERGENCY)
    concept: dict[str, Any] = {"text": r.purpose.value}
    if coding:
        concept["coding"] = coding
    return concept


def _agent(r: AccessRecorded) -> dict[str, Any]:
    who: dict[str, Any] = {"identifier": {"system": USER_SYSTEM, "value": r.actor_id}}
    # FHIR strings may not be empty: a blank name or role is left out, not sent as "".
    if r.actor_name:
        who["display"] = r.actor_name
    agent: dict[str, Any] = {"who": who, "requestor": True}
    roles = [{"text": d.value} for d in r.actor_disciplines] + [
        {"text": role} for role in r.actor_roles if role
    ]
    if roles:
        agent["role"] = roles
    if r.client_addr:
        # Network access point type 2 is an IP address.
        agent["network"] = {"address": r.client_addr, "type": "2"}
    return agent


def _entities(r: AccessRecorded) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if r.patient_id is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{r.patient_id}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    resource: dict[str, Any] = {
        # Without an id (a search, a refusal before anything was read) the access touched a
        # kind of resource, not one resource: name the kind rather than reference nothing.
        "what": (
            {"reference": f"{r.resource_type}/{r.resource_id}"}
            if r.resource_id is not None
            else {"display": r.resource_type}
        ),
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
    }
    labels = [
        {"system": ACT_CODE, "code": code, "display": display}
        for code, display in (_SENSITIVITY[s] for s in r.sensitivity)
    ]
    if labels:
        resource["securityLabel"] = labels
    details = [
        {"type": kind, "valueString": value}
        for kind, value in (("request-id", r.request_id), ("correlation-id", r.correlation_id))
        if value
    ]
    if details:
        resource["detail"] = details
    entities.append(resource)
    return entities
