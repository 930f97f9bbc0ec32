"""Rendering audit-log entries for a compliance officer's export: JSON Lines, CSV, or a
FHIR R4B Bundle of AuditEvent resources (`carecoord audit export --format jsonl|csv|fhir`).

Pure functions over already-decrypted entries: no I/O, no database, no keys.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry

from services.audit.reports import Found
from services.fhir.audit_events import Access, audit_event
from services.fhir.clinical import meta
from services.fhir.refs import full_url

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


def fhir_bundle(found: Iterable[Found], *, generated_at: datetime) -> Bundle:
    """A FHIR R4B Bundle (type collection) with one AuditEvent per entry, mapped as
    `export fhir` maps a patient's events (services.fhir.audit_events)."""
    found = list(found)
    return Bundle(
        # The high-water mark of the events' own security labels, as `export fhir` does.
        meta=meta({s for f in found for s in f.record.sensitivity}),
        type="collection",
        timestamp=generated_at,
        # FHIR forbids empty arrays: a bundle with nothing to carry has no entry element.
        entry=[
            BundleEntry(
                fullUrl=_full_url(f.record.record_id),
                # No Patient is in this Bundle: the events name the patient by identifier.
                resource=audit_event(Access(f.label, f.record), patient_in_bundle=False),
            )
            for f in found
        ]
        or None,
    )


def fhir_text(found: Iterable[Found], *, generated_at: datetime) -> str:
    """The Bundle as the command writes it: indented JSON ending in a newline."""
    return fhir_bundle(found, generated_at=generated_at).model_dump_json(indent=2) + "\n"


def _full_url(record_id: str) -> str:
    # The record's own UUID, so an event is matched to its JSON Lines / CSV row by
    # record_id. records.py makes only UUIDs; any other id gets a UUID derived from it.
    try:
        return f"urn:uuid:{uuid.UUID(record_id)}"
    except ValueError:
        return full_url("AuditEvent", record_id)
