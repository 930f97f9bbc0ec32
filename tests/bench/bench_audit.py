"""Benchmark (not a test): audit-log appends (encrypted, chained, stored) and verification,
beside a raw PostgreSQL COPY of ~1 KB rows on the same database, in one run.

    .venv/bin/python -m tests.bench.bench_audit [--entries 100000 | --quick] [--json PATH]

Uses CARECOORD_DATABASE_URL when set, else PostgreSQL on 127.0.0.1:5432 as postgres when
it answers, else starts an embedded PostgreSQL (durable settings, as `carecoord up` runs
it). Works in a fresh database, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.audit import keys as audit_keys
from services.audit import store
from services.audit.keys import AuditKeys
from services.audit.reports import AuditReader
from services.common import db, embedded
from services.settings import Settings

BATCH = 1000
CHAINS = 4
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

_NAMES = ("Amara Okafor", "Jonas Lindqvist", "Priya Raman", "Mateo Alvarez", "Grace Chen")
_REASONS = (
    "Reviewing medication list before the weekly care-team huddle.",
    "Updating the shared care plan after the home visit this morning.",
    "Checking lab results referenced in the referral from cardiology.",
)
_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126"
)


def _record(n: int, at: datetime) -> AccessRecorded:
    return AccessRecorded(
        record_id=str(uuid.uuid4()),
        at=at,
        actor_id=str(uuid.uuid4()),
        actor_name=_NAMES[n % len(_NAMES)],
        actor_roles=("clinician",),
        actor_disciplines=(Discipline.NURSE,) if n % 2 else (Discipline.PHYSICIAN,),
        patient_id=str(uuid.uuid4()),
        action=AccessAction.READ if n % 5 else AccessAction.UPDATE,
        resource_type="CarePlan",
        resource_id=str(uuid.uuid4()),
        purpose=Purpose.TREATMENT if n % 7 else Purpose.CARE_COORDINATION,
        outcome=AccessOutcome.PERMIT if n % 11 else AccessOutcome.PERMIT_REDACTED,
        reason=_REASONS[n % len(_REASONS)],
        sensitivity=(Sensitivity.MENTAL_HEALTH,) if n % 13 == 0 else (),
        request_id=uuid.uuid4().hex,
        correlation_id=str(uuid.uuid4()),
        client_addr=f"10.{n % 256}.{(n // 256) % 256}.{n % 200 + 1}",
        user_agent=_AGENT,
    )


def _line(label: str, count: int, seconds: float, row_bytes: float | None) -> float:
    rate = count / seconds
    size = f"{row_bytes:>9,.0f}" if row_bytes is not None else f"{'':>9}"
    print(f"{label:<46} {rate:>12,.0f} {size} {count:>9,} {seconds:>8.2f}")
    return rate


async def raw_copy(pool: asyncpg.Pool[Any], entries: int) -> tuple[float, float]:
    """(seconds, average stored row bytes) for COPY of `entries` ~1 KB rows, 1,000 a batch."""
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE bench_copy (at timestamptz, chain int, seq bigint, tag text, body bytea)"
        )
        now = datetime.now(UTC)
        batches = [
            [(now, b % CHAINS, b * BATCH + i, f"row-{i}", os.urandom(1000)) for i in range(BATCH)]
            for b in range(entries // BATCH)
        ]
        started = time.perf_counter()
        for rows in batches:
            await conn.copy_records_to_table(
                "bench_copy", records=rows, columns=("at", "chain", "seq", "tag", "body")
            )
        seconds = time.perf_counter() - started
        size = await conn.fetchval("SELECT avg(pg_column_size(t.*)) FROM bench_copy t")
    return seconds, float(size)


async def audit_append(
    pool: asyncpg.Pool[Any], keys: AuditKeys, role: str, entries: int
) -> tuple[float, float]:
    """(seconds, average stored row bytes) for appending `entries` records over 4 chains."""
    now = datetime.now(UTC)
    batches = [[_record(b * BATCH + i, now) for i in range(BATCH)] for b in range(entries // BATCH)]
    async with pool.acquire() as conn:
        started = time.perf_counter()
        for b, records in enumerate(batches):
            done = await store.append(
                conn, b % CHAINS, records, keys, role=role, checkpoint_every=1000, now=now
            )
            assert done.written == len(records), done
        seconds = time.perf_counter() - started
        size = await conn.fetchval("SELECT avg(pg_column_size(e.*)) FROM audit_entries e")
    return seconds, float(size)


async def audit_verify(pool: asyncpg.Pool[Any], keys: AuditKeys, entries: int) -> float:
    started = time.perf_counter()
    result = await AuditReader(pool, keys).verify()
    seconds = time.perf_counter() - started
    assert result.ok, result.first
    assert result.entries_checked == entries, result
    return seconds


async def run(dsn: str, entries: int, data_dir: Path) -> dict[str, float | int]:
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    keys = audit_keys.load(settings, create=True)
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    try:
        await db.migrate(pool)
        print(f"{entries:,} entries, batches of {BATCH:,}, {CHAINS} chains")
        print(f"{'what':<46} {'per second':>12} {'row bytes':>9} {'rows':>9} {'seconds':>8}")
        seconds, size = await raw_copy(pool, entries)
        copy_rate = _line("raw PostgreSQL COPY (~1 KB rows)", entries, seconds, size)
        seconds, size = await audit_append(pool, keys, settings.audit_db_role, entries)
        append_rate = _line("audit append (encrypt, chain, COPY)", entries, seconds, size)
        seconds = await audit_verify(pool, keys, entries)
        verify_rate = _line("audit verify (hash, decrypt, indexes)", entries, seconds, None)
    finally:
        await pool.close()
    ratio = append_rate / copy_rate
    print(f"audit append / raw COPY: {ratio:.2f}")
    return {
        "raw_pg_copy": copy_rate,
        "audit_append": append_rate,
        "audit_verify": verify_rate,
        "audit_append_over_copy": ratio,
        "entries": entries,
    }


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _answers(dsn: str) -> bool:
    try:
        await _admin(dsn, "SELECT 1")
    except (OSError, asyncpg.PostgresError):
        return False
    return True


async def _wait_for(dsn: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await _answers(dsn):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not answer within {seconds} s")
        await asyncio.sleep(0.1)


async def _in_fresh_database(admin_dsn: str, entries: int, data_dir: Path) -> dict[str, Any]:
    await _wait_for(admin_dsn)
    name = f"carecoord_bench_{uuid.uuid4().hex[:8]}"
    await _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        return await run(_with_database(admin_dsn, name), entries, data_dir)
    finally:
        await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 entries")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    entries = 10_000 if args.quick else args.entries
    if entries < BATCH or entries % BATCH:
        parser.error(f"--entries must be a positive multiple of {BATCH}")
    tmp = Path(tempfile.mkdtemp(prefix="carecoord-bench-"))
    proc: tuple[subprocess.Popen[bytes], int] | None = None
    try:
        dsn = os.environ.get("CARECOORD_DATABASE_URL")
        if not dsn:
            if asyncio.run(_answers(LOCAL_DSN)):
                dsn = LOCAL_DSN
            else:
                pg = embedded.EmbeddedPostgres(tmp / "pg", embedded.free_port())
                pg.initdb()
                spec = pg.spec(tmp / "pg.log")
                proc = (embedded.spawn(spec), spec.stop_signal)
                dsn = pg.dsn
        where = urlsplit(dsn)
        print(f"PostgreSQL at {where.hostname}:{where.port or 5432}")
        figures = asyncio.run(_in_fresh_database(dsn, entries, tmp / "data"))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if proc is not None:
            embedded.stop(*proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
