"""Exporting one patient as a FHIR R4B Bundle: gather the record, map it, record the export
in the audit log, and only then hand the Bundle back. The export reads PHI, so it is an
access like any other: when its access record is not accepted, nothing is exported
(ARCHITECTURE.md, guarantee 6)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose
from services.audit import keys as audit_keys
from services.audit import records
from services.audit.keys import LogKeys
from services.audit.sink import AuditSink, AuditUnavailable, OutboxAuditSink
from services.common import db, text
from services.common.actor import Actor
from services.fhir.mapping import Exported, build_bundle
from services.fhir.source import gather
from services.settings import Settings

USER_AGENT = "carecoord export fhir"


def bundle_text(exported: Exported) -> str:
    """The Bundle as `carecoord export fhir` writes it: indented JSON ending in a newline,
    any hidden character stored before typed text was checked written as a JSON escape of
    the same value, so nothing in it reorders or colours a line where it is read."""
    return text.escape_hidden_json(exported.bundle.model_dump_json(indent=2)) + "\n"


class ExportNotRecorded(RuntimeError):
    """The export's access record was not accepted by the audit log: nothing may go out."""


async def export_patient(
    settings: Settings,
    patient_id: str,
    *,
    purpose: Purpose = Purpose.TREATMENT,
    actor: str | None = None,
    pool: asyncpg.Pool[Any] | None = None,
    keys: LogKeys | None = None,
    sink: AuditSink | None = None,
    now: datetime | None = None,
) -> Exported:
    """The patient's Bundle, once the export is recorded as an access by `actor` (default:
    the operator) for `purpose`. Opens what it is not given: a pool on the configured
    database, the configured audit keys, the audit outbox on that database.

    Raises UnknownPatient, ExportNotRecorded, audit_keys.BadKeys, or the database's errors.
    """
    keys = keys or audit_keys.load_reader(settings)
    if pool is None:
        if not settings.database_url:
            raise db.DatabaseUnavailable("CARECOORD_DATABASE_URL is not set")
        own = await db.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            return await export_patient(
                settings,
                patient_id,
                purpose=purpose,
                actor=actor,
                pool=own,
                keys=keys,
                sink=sink,
                now=now,
            )
        finally:
            await own.close()
    at = now or datetime.now(UTC)
    record = await gather(pool, keys, patient_id)
    exported = build_bundle(record, purpose=purpose, now=at, bundle_id=str(uuid.uuid4()))
    audit = sink or OutboxAuditSink(pool, settings)
    try:
        await audit.publish(
            access_records(exported, patient_id, who=actor or records.operator(), at=at)
        )
    except AuditUnavailable as exc:
        raise ExportNotRecorded(
            f"the export could not be recorded in the audit log ({exc}); nothing was exported"
        ) from exc
    finally:
        if sink is None:
            await audit.close()
    return exported


def access_records(
    exported: Exported, patient_id: str, *, who: str, at: datetime
) -> list[AccessRecorded]:
    """The export's own access record: one, for the patient, naming the Bundle it made.
    Its reason counts what went out and what the purpose kept out (types and numbers
    only: never PHI)."""
    requester = records.Requester(
        actor=Actor(user_id=who, name=who, roles=frozenset({"operator"})),
        purpose=exported.purpose,
        user_agent=USER_AGENT,
    )
    sent = ", ".join(f"{n} {kind}" for kind, n in exported.counts.items())
    reason = f"FHIR export of the patient's record by the operator: {sent}"
    if exported.left_out:
        kept = ", ".join(f"{n} {kind}" for kind, n in sorted(exported.left_out.items()))
        tags = ", ".join(sorted(exported.withheld))
        reason += f"; {tags} left out for {exported.purpose.value} (GINA): {kept}"
    touch = records.Touch(
        action=AccessAction.EXPORT,
        resource_type="Bundle",
        resource_id=exported.bundle.id,
        # Items withheld for the purpose make it a redacted release.
        outcome=AccessOutcome.PERMIT_REDACTED if exported.left_out else AccessOutcome.PERMIT,
        reason=reason,
    )
    return records.records_for(requester, touch, {patient_id: exported.sensitivity}, at=at)
