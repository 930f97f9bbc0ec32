"""A witness of the audit log on a real PostgreSQL, the records appended by the real writer
code: genuine growth passes; tampering as the database's superuser with the triggers off
(the newest entries cut off with their tree nodes and checkpoints, a whole chain deleted,
a history rewritten and re-signed with the genuine key, as an insider holding it would)
is named, and the witness's state keeps the last checkpoint that verified."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.audit import keys as audit_keys
from services.audit import note, proofs, store
from services.audit.keys import AuditKeys
from services.audit.witness import Kind
from services.audit.witnessing import DatabaseSource, StateFile, Witness
from services.settings import Settings
from tests.integration.audit_chains import NOW, cut, grow, record, vkey
from tests.integration.workers import environment


@pytest.fixture
def keys(settings: Settings) -> AuditKeys:
    # The development key file in the test's data folder, which the commands read too.
    return audit_keys.load(settings, create=True)


def witness(settings: Settings, keys: AuditKeys, pool: Any, tmp_path: Path) -> Witness:
    return Witness(
        source=DatabaseSource(pool),
        state=StateFile(tmp_path / "witness-state.json"),
        vkey=vkey(settings, keys),
    )


def kept_sizes(tmp_path: Path) -> dict[str, int]:
    state = json.loads((tmp_path / "witness-state.json").read_text())
    return {chain: kept["size"] for chain, kept in state["chains"].items()}


async def test_genuine_growth_passes_and_is_kept(
    pool: asyncpg.Pool[Any], settings: Settings, keys: AuditKeys, tmp_path: Path
) -> None:
    watcher = witness(settings, keys, pool, tmp_path)
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 0, 6)
        await grow(conn, settings, keys, 1, 3)
    first = await watcher.once()
    assert (first.problems, [a.grew_from for a in first.accepted]) == ([], [None, None])
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 0, 7)
    done = await watcher.once()
    assert done.problems == []
    assert [(a.chain, a.grew_from, a.seen.size) for a in done.accepted] == [(0, 6, 13)]
    assert done.unchanged == 1
    assert kept_sizes(tmp_path) == {"0": 13, "1": 3}


async def test_tail_truncation_is_named_and_the_state_kept(
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    watcher = witness(settings, keys, pool, tmp_path)
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 0, 11)
    assert not (await watcher.once()).problems
    async with admin_pool.acquire() as conn:  # behind the services' back
        await cut(conn, 0, 8)
        assert await store.tree_size(conn, 0) == 8
    done = await watcher.once()
    assert [(p.chain, p.kind) for p in done.problems] == [(0, Kind.TAIL_TRUNCATION)]
    assert "8 entries" in done.problems[0].why and "11" in done.problems[0].why
    assert kept_sizes(tmp_path) == {"0": 11}


async def test_a_deleted_chain_is_named(
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    watcher = witness(settings, keys, pool, tmp_path)
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 0, 5)
        await grow(conn, settings, keys, 3, 6)
    assert not (await watcher.once()).problems
    async with admin_pool.acquire() as conn:  # behind the services' back
        await cut(conn, 3, 0)
    done = await watcher.once()
    assert [(p.chain, p.kind) for p in done.problems] == [(3, Kind.DELETED_CHAIN)]
    assert done.unchanged == 1
    # Entries left but every checkpoint removed is named too.
    async with admin_pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("DELETE FROM audit_checkpoints WHERE chain = 0")
    done = await watcher.once()
    assert [(p.chain, p.kind) for p in done.problems] == [
        (0, Kind.DELETED_CHECKPOINTS),
        (3, Kind.DELETED_CHAIN),
    ]
    assert kept_sizes(tmp_path) == {"0": 5, "3": 6}


@pytest.mark.parametrize("regrown", [3, 6], ids=["same size", "larger"])
async def test_a_history_rewritten_and_re_signed_with_the_genuine_key_is_a_fork(
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
    regrown: int,
) -> None:
    watcher = witness(settings, keys, pool, tmp_path)
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 0, 9)
    assert not (await watcher.once()).problems
    async with admin_pool.acquire() as conn:
        # The insider (the database's administrator, holding the signing key) cuts the
        # chain back to 6 entries and writes other ones after them,
        # through the writer's own code with the genuine key: a chain intact in itself.
        await cut(conn, 0, 6)
        for i in range(regrown):
            await store.append(
                conn,
                0,
                [record(500 + i)],
                keys,
                role=settings.audit_db_role,
                checkpoint_every=1000,
                now=NOW + timedelta(days=1),
                log_name=settings.audit_log_name,
            )
        await store.checkpoint(
            conn,
            0,
            keys,
            role=settings.audit_db_role,
            now=NOW + timedelta(days=1),
            log_name=settings.audit_log_name,
        )
        assert await store.tree_size(conn, 0) == 6 + regrown
    done = await watcher.once()
    assert [(p.chain, p.kind) for p in done.problems] == [(0, Kind.FORKED_HISTORY)]
    assert kept_sizes(tmp_path) == {"0": 9}


def carecoord(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", *args],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_commands_prove_check_offline_and_witness_with_exit_codes(
    pool: asyncpg.Pool[Any],
    admin_pool: asyncpg.Pool[Any],
    settings: Settings,
    keys: AuditKeys,
    tmp_path: Path,
) -> None:
    async with pool.acquire() as conn:
        await grow(conn, settings, keys, 2, 10)
    key = carecoord(settings, "public-key", "--vkey")
    assert key.returncode == 0, key.stderr
    assert key.stdout.strip() == vkey(settings, keys)

    bundle = tmp_path / "entry.json"
    made = carecoord(settings, "prove", "--entry", "2:3", "--out", str(bundle))
    assert made.returncode == 0, made.stderr
    assert json.loads(bundle.read_text())["treeSize"] == 10
    checked = carecoord(settings, "check-proof", str(bundle), "--vkey", key.stdout.strip())
    assert (checked.returncode, checked.stdout.count("\n")) == (0, 1), checked.stderr
    assert checked.stdout.startswith("OK: entry 2:3 is in the tree of 10 entries of chain 2")
    pinned = carecoord(settings, "prove", "--entry", "2:3", "--size", "8")
    assert json.loads(pinned.stdout)["treeSize"] == 8
    grown = carecoord(settings, "prove", "--chain", "2", "--from", "4")
    assert (grown.returncode, json.loads(grown.stdout)["toSize"]) == (0, 10)
    proof = proofs.read(grown.stdout.encode())
    assert proofs.check(proof, note.parse_vkey(vkey(settings, keys))).startswith("OK")
    for wrong in (["--entry", "2:11"], ["--entry", "9:1"], ["--entry", "2:3", "--size", "7"]):
        refused = carecoord(settings, "prove", *wrong)
        assert refused.returncode == 2, refused.stdout
        assert "carecoord:" in refused.stderr

    state = str(tmp_path / "state.json")
    first = carecoord(settings, "witness", "--state", state, "--once")
    assert first.returncode == 0, first.stderr
    assert "OK: 0 chain(s) grew consistently, 1 seen for the first time" in first.stdout
    async with admin_pool.acquire() as conn:  # behind the services' back
        await cut(conn, 2, 5)
    second = carecoord(settings, "witness", "--state", state, "--once")
    assert second.returncode == 1
    assert "PROBLEM chain 2: tail truncation" in second.stderr
    assert "witness.problem" in second.stderr
