"""Rendering audit-log entries for a compliance officer's export as JSON Lines or CSV
(`carecoord audit export --format jsonl|csv`; the FHIR format is services.fhir.audit_bundle).

Pure functions over already-decrypted entries: no I/O, no database, no keys.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from services.audit.reports import Found
from services.common import text

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
        # Hidden characters stored before typed text was checked (or in a user agent) are
        # written as JSON escapes: the same value, but inert on a terminal.
        yield text.escape_hidden_json(json.dumps(row, separators=(",", ":"), ensure_ascii=False))


def csv_lines(found: Iterable[Found]) -> Iterator[str]:
    """A header line, then one line per entry, each ending in the '\\r\\n' csv writes; lists
    are joined with ';', no cell can start a spreadsheet formula, and no cell holds a
    control, bidirectional-control or zero-width character (nor a tab or line break): each
    is written as `<U+XXXX>`, so a row is one line and reads as it is stored."""
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
    # Data stored before typed text was checked may hold hidden characters: shown, not run.
    cell = text.reveal(cell)
    # A leading quote makes spreadsheets show the cell as text; the value stays readable.
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _csv_row(cells: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(cells)
    return out.getvalue()
