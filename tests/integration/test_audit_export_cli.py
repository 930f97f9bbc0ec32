"""`carecoord audit export` on a real PostgreSQL and broker: the file is its owner's alone from
the moment it exists, an existing file is kept unless --force, an id that names no patient
is refused as `export fhir` refuses it, hidden characters stored before they were refused
come out shown, not raw, and each export is recorded in the audit log."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose
from services.audit import export, store
from services.audit import keys as audit_keys
from services.audit.keys import AuditKeys
from services.settings import Settings
from tests import operations as op
from tests.graphql import gql
from tests.integration.api import token
from tests.integration.kafka_helpers import exports_recorded
from tests.integration.workers import environment

LEAD = token("lead-1", "Dr Lead")
# As a record stored before typed text was checked could hold it.
LEGACY_NAME = '=HYPERLINK("http://x")\u202eevil'
LEGACY_REASON = "member of the care team\x1b[2J"


@pytest.fixture
def keys(settings: Settings) -> AuditKeys:
    # The development key file in the test's data folder, which the command reads too.
    return audit_keys.load(settings, create=True)


async def enrolled_with_a_legacy_access(
    api: httpx.AsyncClient, pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys
) -> str:
    team = (await gql(api, op.CREATE_TEAM, {"name": "Ward 4"}, token=LEAD))["createTeam"]
    variables = {
        "teamId": team["id"],
        "mrn": "MRN-X-1",
        "name": "A Patient",
        "birthDate": "1970-01-01",
    }
    patient = str((await gql(api, op.ENROLL, variables, token=LEAD))["enrollPatient"]["id"])
    legacy = AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=datetime.now(UTC),
        actor_id="u-7",
        actor_name=LEGACY_NAME,
        actor_roles=("clinician",),
        actor_disciplines=(Discipline.PHYSICIAN,),
        patient_id=patient,
        action=AccessAction.READ,
        resource_type="Patient",
        resource_id=patient,
        purpose=Purpose.TREATMENT,
        outcome=AccessOutcome.PERMIT,
        reason=LEGACY_REASON,
    )
    async with pool.acquire() as conn:
        await store.append(
            conn,
            0,
            [legacy],
            keys,
            role=settings.audit_db_role,
            checkpoint_every=1000,
            now=datetime.now(UTC),
        )
    return patient


def run_export(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "export", *args],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        # With no umask, a file opened the ordinary way would be 0666: only a file created
        # with mode 0600 comes out private.
        preexec_fn=lambda: os.umask(0),
    )


async def test_an_export_file_is_private_kept_unless_forced_and_each_export_is_recorded(
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    patient = await enrolled_with_a_legacy_access(api, pool, settings, keys)
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "audit.csv"
    common = ("--patient", patient, "--format", "csv", "--out", str(out), "--actor", "ops-1")

    first = run_export(settings, *common)
    written = out.read_bytes().decode("utf-8")
    again = run_export(settings, *common)
    kept = out.read_bytes().decode("utf-8")
    forced = run_export(settings, *common, "--force")

    assert first.returncode == 0, first.stderr
    assert f"exported 1 entries to {out}" in first.stderr
    assert again.returncode == 2
    assert f"--out {out} already exists; pass --force to replace it" in again.stderr
    assert kept == written
    assert forced.returncode == 0, forced.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert os.listdir(folder) == ["audit.csv"]  # no temporary file left behind

    assert written.count("\r\n") == 2 and written.count("\n") == 2  # CSV's own line ends
    _, row = csv.reader(written.splitlines())
    cells = dict(zip(export.CSV_COLUMNS, row, strict=True))
    assert cells["actor_name"] == '\'=HYPERLINK("http://x")<U+202E>evil'
    assert cells["reason"] == "member of the care team<U+001B>[2J"
    assert "\u202e" not in written and "\x1b" not in written

    recorded = await exports_recorded(settings)
    assert len(recorded) == 2  # the refused run wrote nothing and recorded nothing
    assert {(r.actor_id, r.patient_id, r.resource_type) for r in recorded} == {
        ("ops-1", patient, "AuditLog")
    }


async def test_a_new_export_file_is_created_readable_by_its_owner_only(
    api: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    patient = await enrolled_with_a_legacy_access(api, pool, settings, keys)
    out = tmp_path / "audit.jsonl"

    done = run_export(settings, "--patient", patient, "--out", str(out))

    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    [line] = out.read_text(encoding="utf-8").splitlines()
    assert line.isprintable()  # the hidden characters are JSON escapes
    assert "\\u202e" in line and "\\u001b" in line


async def test_an_unknown_patient_is_refused_with_exit_2_nothing_written_or_recorded(
    settings: Settings, keys: AuditKeys, tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"

    done = run_export(settings, "--patient", "no-such-patient", "--out", str(out))

    assert done.returncode == 2
    assert "no patient has the id 'no-such-patient'" in done.stderr
    assert not out.exists()
    assert await exports_recorded(settings) == []


def test_hidden_characters_in_the_patient_or_an_unsafe_actor_are_refused_before_any_work(
    tmp_path: Path,
) -> None:
    # No database or broker configured: the refusals come before either is needed.
    bare = {**os.environ, "CARECOORD_DATABASE_URL": "", "CARECOORD_KAFKA_BOOTSTRAP": ""}
    existing = tmp_path / "audit.jsonl"
    existing.write_text("keep me")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "audit", "export", *args],
            env=bare,
            capture_output=True,
            text=True,
            timeout=60,
        )

    patient = run("--patient", "p-1\u202e")
    actor = run("--patient", "p-1", "--actor", "ops\u0430-1")
    clobber = run("--patient", "p-1", "--out", str(existing))

    assert patient.returncode == 2
    assert "--patient must not contain a bidirectional-control character (U+202E)" in (
        patient.stderr
    )
    assert actor.returncode == 2
    assert "--actor must be 1 to 128 ASCII letters" in actor.stderr
    assert "ops" not in actor.stderr.split("--actor", 1)[1]
    assert clobber.returncode == 2
    assert "already exists; pass --force to replace it" in clobber.stderr
    assert existing.read_text() == "keep me"
