"""A compliance officer's audit export as a FHIR R4B Bundle of AuditEvent resources
(`carecoord audit export --format fhir`), mapped as `export fhir` maps a patient's events.

Pure functions over already-decrypted entries: no I/O, no database, no keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry

from services.audit.reports import Found
from services.common import text
from services.fhir.audit_events import Access, audit_event
from services.fhir.clinical import meta
from services.fhir.refs import full_url


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
    """The Bundle as the command writes it: indented JSON ending in a newline, any hidden
    character in its strings written as a JSON escape (services.common.text)."""
    document = fhir_bundle(found, generated_at=generated_at).model_dump_json(indent=2)
    return text.escape_hidden_json(document) + "\n"


def _full_url(record_id: str) -> str:
    # The record's own UUID, so an event is matched to its JSON Lines / CSV row by
    # record_id. records.py makes only UUIDs; any other id gets a UUID derived from it.
    try:
        return f"urn:uuid:{uuid.UUID(record_id)}"
    except ValueError:
        return full_url("AuditEvent", record_id)
