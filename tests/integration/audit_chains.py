"""Audit chains written as the writer writes them, and tampered with as the database's
superuser would (triggers off), for the proof and witness tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose
from services.audit import note, store
from services.audit.keys import AuditKeys
from services.common.db import Conn
from services.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(i: int) -> AccessRecorded:
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=NOW + timedelta(milliseconds=i),
        actor_id=f"user-{i % 3}",
        actor_name="Pat Pharmacist",
        patient_id=f"patient-{i % 4}",
        action=AccessAction.READ,
        resource_type="CarePlan",
        resource_id=f"plan-{i}",
        purpose=Purpose.TREATMENT,
        outcome=AccessOutcome.PERMIT,
        reason="user is a team member (PHARMACIST)",
    )


def vkey(settings: Settings, keys: AuditKeys) -> str:
    return note.vkey(settings.audit_log_name, keys.verify_key)


async def grow(conn: Conn, settings: Settings, keys: AuditKeys, chain: int, count: int) -> None:
    """Append `count` records to the chain as the writer does, signing every 4 entries and
    the head at the end."""
    for i in range(count):
        await store.append(
            conn,
            chain,
            [record(chain * 10_000 + i)],
            keys,
            role=settings.audit_db_role,
            checkpoint_every=4,
            now=NOW + timedelta(seconds=i),
            log_name=settings.audit_log_name,
        )
    await store.checkpoint(
        conn,
        chain,
        keys,
        role=settings.audit_db_role,
        now=NOW + timedelta(hours=1),
        log_name=settings.audit_log_name,
    )


async def cut(conn: Conn, chain: int, keep: int) -> None:
    """As the superuser with triggers off: remove the chain's entries after `keep`, the tree
    nodes covering any of them, and the checkpoints signed after them."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("DELETE FROM audit_entries WHERE chain = $1 AND seq > $2", chain, keep)
        await conn.execute(
            "DELETE FROM audit_tree WHERE chain = $1 AND (idx + 1) * (1::bigint << level) > $2",
            chain,
            keep,
        )
        await conn.execute(
            "DELETE FROM audit_checkpoints WHERE chain = $1 AND seq > $2", chain, keep
        )
