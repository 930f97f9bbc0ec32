"""Archiving a month of the audit log on a real PostgreSQL: the bundle checks offline with
the verifier key alone, the month's partition leaves the log, and verification and proofs
go on over what is kept, still naming tampering, including of what was archived."""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose
from services.audit import archive, archive_store, merkle, note, store
from services.audit import keys as audit_keys
from services.audit.archive_store import CannotArchive
from services.audit.keys import AuditKeys
from services.audit.reports import AuditReader
from services.common import db
from services.settings import Settings
from tests.integration.workers import environment

ROLE = "carecoord_audit"
NAME = store.LOG_NAME
# Fixed months well in the past: archiving is allowed for them whatever today is.
JANUARY, FEBRUARY = date(2026, 1, 1), date(2026, 2, 1)
LATER = datetime(2026, 3, 1, tzinfo=UTC)  # "now" for the archive: both months have ended


def record(at: datetime) -> AccessRecorded:
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=at,
        actor_id="user-1",
        actor_name="Pat Pharmacist",
        patient_id=f"patient-{secrets.randbelow(4)}",
        action=AccessAction.READ,
        resource_type="CarePlan",
        resource_id="plan-1",
        purpose=Purpose.TREATMENT,
        outcome=AccessOutcome.PERMIT,
        reason="user is a team member (PHARMACIST)",
    )


@pytest.fixture
async def owner_pool(owner_database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    """The tables' owner: only it may detach a month (the services' role may not)."""
    p = await db.create_pool(owner_database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def keys() -> AuditKeys:
    return AuditKeys(
        records={"k1": secrets.token_bytes(32)},
        current="k1",
        index_key=secrets.token_bytes(32),
        signing_key=Ed25519PrivateKey.generate(),
        source="test",
    )


def verifier(keys: AuditKeys) -> note.Verifier:
    return note.parse_vkey(note.vkey(NAME, keys.verify_key))


def jan(i: int) -> datetime:
    return datetime(2026, 1, 10, tzinfo=UTC) + timedelta(minutes=i)


def feb(i: int) -> datetime:
    return datetime(2026, 2, 10, tzinfo=UTC) + timedelta(minutes=i)


async def fill(pool: asyncpg.Pool[Any], keys: AuditKeys) -> None:
    """Chain 0: 5 January entries, 4 February ones, 2 late January ones (an outbox
    delivering after an outage), 3 more February ones; chain 1: 3 January ones only.
    Checkpoints every 3 entries, and the heads signed at the end."""
    batches = {
        0: [
            [jan(i) for i in range(5)],
            [feb(i) for i in range(4)],
            [jan(50), jan(51)],
            [feb(i) for i in range(10, 13)],
        ],
        1: [[jan(i) for i in range(100, 103)]],
    }
    async with pool.acquire() as conn:
        for chain, runs in batches.items():
            for run in runs:
                await store.append(
                    conn,
                    chain,
                    [record(at) for at in run],
                    keys,
                    role=ROLE,
                    checkpoint_every=3,
                    now=LATER,
                )
            await store.checkpoint(conn, chain, keys, role=ROLE, now=LATER)


async def test_an_archived_month_checks_offline_and_leaves_verification_and_proofs_whole(
    pool: asyncpg.Pool[Any],
    owner_pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    await fill(pool, keys)
    folder = tmp_path / "2026-01"
    async with owner_pool.acquire() as conn:
        done = await archive_store.archive_month(
            conn, JANUARY, folder, verifier(keys), now=LATER, grace=timedelta(days=7)
        )
        assert (done.entries, done.chains) == (10, 2)
        # The bundle is its owner's only, and an outside party can check it.
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for name in (archive.ENTRIES, archive.MANIFEST):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
        with (folder / archive.ENTRIES).open("rb") as lines:
            checked = archive.check((folder / archive.MANIFEST).read_bytes(), lines, verifier(keys))
        assert checked.sizes == {0: 14, 1: 3}
        # The month left the log, its table kept aside; what left is on record.
        assert not await archive_store.month_attached(conn, JANUARY)
        assert await conn.fetchval("SELECT to_regclass('audit_archived_y2026m01')") is not None
        assert await conn.fetchval("SELECT count(*) FROM audit_entries") == 7
        assert await archive_store.archived_seqs(conn) == {0: [(1, 5), (10, 11)], 1: [(1, 3)]}
        # Proofs go on covering archived entries and kept ones alike.
        for chain, seq, size in ((0, 2, 14), (0, 12, 14), (1, 3, 3)):
            cp = await store.checkpoint_covering(conn, chain, seq)
            assert cp is not None and cp.root is not None and cp.seq == size
            leaf = await conn.fetchval(
                "SELECT hash FROM audit_tree WHERE chain = $1 AND level = 0 AND idx = $2",
                chain,
                seq - 1,
            )
            proof = await store.inclusion_proof(conn, chain, seq, size)
            merkle.verify_inclusion(seq - 1, size, bytes(leaf), proof, cp.root)
    reader = AuditReader(pool, keys)
    result = await reader.verify(unsigned_grace=None)
    assert result.ok, result.problems
    assert result.entries_checked == 7

    # Tampering after archiving is still named: an archived entry's leaf.
    async with admin_pool.acquire() as conn:
        await conn.execute("ALTER TABLE audit_tree DISABLE TRIGGER USER")
        await conn.execute(
            "UPDATE audit_tree SET hash = sha256(hash) WHERE chain = 1 AND level = 0 AND idx = 1"
        )
    bad = await reader.verify(unsigned_grace=None)
    assert not bad.ok and bad.first is not None and bad.first.chain == 1


async def test_a_month_not_over_or_not_signed_is_not_archived_and_nothing_leaves(
    pool: asyncpg.Pool[Any], owner_pool: asyncpg.Pool[Any], keys: AuditKeys, tmp_path: Path
) -> None:
    await fill(pool, keys)
    async with owner_pool.acquire() as conn:
        with pytest.raises(CannotArchive, match="ended less than"):
            await archive_store.archive_month(
                conn,
                FEBRUARY,
                tmp_path / "feb",
                verifier(keys),
                now=datetime(2026, 3, 3, tzinfo=UTC),
                grace=timedelta(days=7),
            )
        with pytest.raises(CannotArchive, match="no partition"):
            await archive_store.archive_month(
                conn,
                date(2025, 6, 1),
                tmp_path / "june",
                verifier(keys),
                now=LATER,
                grace=timedelta(days=7),
            )
        # A January entry no signed note covers yet: refused, nothing detached or left behind.
        await store.append(
            conn, 1, [record(jan(200))], keys, role=ROLE, checkpoint_every=99, now=LATER
        )
        with pytest.raises(CannotArchive, match="no signed checkpoint"):
            await archive_store.archive_month(
                conn,
                JANUARY,
                tmp_path / "jan",
                verifier(keys),
                now=LATER,
                grace=timedelta(days=7),
            )
        assert not (tmp_path / "jan").exists()
        assert await archive_store.month_attached(conn, JANUARY)
        assert await archive_store.archived_seqs(conn) == {}


async def test_the_command_line_archives_as_the_owner_only_and_checks_the_bundle_offline(
    pool: asyncpg.Pool[Any], settings: Settings, tmp_path: Path
) -> None:
    keys = audit_keys.load(settings, create=True)
    await fill(pool, keys)
    env = environment(settings)
    folder = tmp_path / "jan"

    def carecoord(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    # The services' role may not detach a month: one line says who may.
    as_services = carecoord(
        "audit",
        "archive",
        "--month",
        "2026-01",
        "--out",
        str(folder),
        CARECOORD_MIGRATE_DATABASE_URL="",
    )
    assert as_services.returncode == 2, as_services.stderr
    assert "only the audit tables' owner" in as_services.stderr
    assert not folder.exists()
    bad_month = carecoord("audit", "archive", "--month", "2026-13", "--out", str(folder))
    assert bad_month.returncode == 2 and "is not YYYY-MM" in bad_month.stderr

    owner = {"CARECOORD_MIGRATE_DATABASE_URL": settings.migrate_database_url or ""}
    done = carecoord("audit", "archive", "--month", "2026-01", "--out", str(folder), **owner)
    assert done.returncode == 0, done.stderr
    assert "archived 10 entries of 2 chain(s)" in done.stdout

    vkey = note.vkey(settings.audit_log_name, keys.verify_key)
    good = carecoord("audit", "check-archive", str(folder), "--vkey", vkey)
    assert good.returncode == 0, good.stderr
    assert "OK: 10 entries of 2026-01 in 2 chain(s)" in good.stdout
    entries = folder / archive.ENTRIES
    data = bytearray(entries.read_bytes())
    at = data.index(b'"ciphertext":"') + 20
    data[at] = ord("A") if data[at] != ord("A") else ord("B")
    entries.write_bytes(bytes(data))
    bad = carecoord("audit", "check-archive", str(folder), "--vkey", vkey)
    assert bad.returncode == 1 and "BAD:" in bad.stderr
    other = note.vkey(settings.audit_log_name, Ed25519PrivateKey.generate().public_key())
    assert carecoord("audit", "check-archive", str(folder), "--vkey", other).returncode == 1
    assert carecoord("audit", "check-archive", str(folder)).returncode == 2


async def test_the_services_role_may_read_the_archives_record_but_not_write_it(
    pool: asyncpg.Pool[Any],
) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_archives") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO audit_archives (month, chain, first_seqs, last_seqs, entries,"
                " checkpoint_size, checkpoint, manifest_sha256)"
                " VALUES ('2026-01-01', 0, '{1}', '{5}', 5, 5, 'x', 'y')"
            )
