"""The audit log's Merkle tree on a real PostgreSQL: the writer stores each chain's nodes
with its entries, checkpoints carry signed notes of the tree's root, and the proofs the
store assembles verify against those roots while forged ones do not."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Purpose
from services.audit import merkle, note, store
from services.audit.keys import AuditKeys
from services.common.db import Conn

ROLE = "carecoord_audit"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAME = store.LOG_NAME


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


async def append(conn: Conn, keys: AuditKeys, chain: int, sizes: list[int], every: int) -> None:
    n = 0
    for size in sizes:
        batch = [record(chain * 1000 + n + k) for k in range(size)]
        n += size
        await store.append(conn, chain, batch, keys, role=ROLE, checkpoint_every=every, now=NOW)


async def leaves(conn: Conn, chain: int) -> list[bytes]:
    rows = await conn.fetch("SELECT hash FROM audit_entries WHERE chain = $1 ORDER BY seq", chain)
    return [bytes(r["hash"]) for r in rows]


async def test_proofs_from_the_store_verify_against_the_roots_of_signed_notes(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    async with pool.acquire() as conn:
        # Uneven batches, so nodes are made across batch boundaries; two chains.
        await append(conn, keys, 0, [1, 2, 5, 3, 8, 1, 1], every=4)
        await append(conn, keys, 1, [7], every=4)
        data = await leaves(conn, 0)
        size = len(data)
        assert size == 21 and await store.tree_size(conn, 0) == size
        assert await store.tree_size(conn, 1) == 7
        assert await store.tree_size(conn, 2) == 0
        stored = await conn.fetchval("SELECT count(*) FROM audit_tree WHERE chain = 0")
        assert stored == sum(size >> level for level in range(size.bit_length()))

        for n in range(size + 1):
            assert await store.tree_root(conn, 0, n) == merkle.root(data[:n])

        checkpoints = [c for c in await store.checkpoints(conn) if c.chain == 0]
        assert [c.seq for c in checkpoints] == [8, 19]
        for cp in checkpoints:
            assert cp.note is not None and cp.root == merkle.root(data[: cp.seq])
            opened = note.open_note(cp.note, verifier(keys))
            assert opened.origin == f"{NAME}/chain/0"
            assert (opened.size, opened.root) == (cp.seq, cp.root)
            stamp = cp.signed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            assert opened.extensions == (f"carecoord-signed-at {stamp}",)

        latest = {c.chain: c for c in await store.latest_checkpoints(conn)}
        assert (latest[0].seq, latest[1].seq) == (19, 7)
        covering = await store.checkpoint_covering(conn, 0, 9)
        assert covering is not None and covering.seq == 19
        assert await store.checkpoint_covering(conn, 0, 20) is None

        for cp in checkpoints:
            root = note.open_note(cp.note or "", verifier(keys)).root
            for seq in range(1, cp.seq + 1):
                proof = await store.inclusion_proof(conn, 0, seq, cp.seq)
                leaf = merkle.leaf_hash(data[seq - 1])
                merkle.verify_inclusion(seq - 1, cp.seq, leaf, proof, root)
        for first in range(1, size + 1):
            for second in range(first, size + 1):
                proof = await store.consistency_proof(conn, 0, first, second)
                merkle.verify_consistency(
                    first, second, merkle.root(data[:first]), merkle.root(data[:second]), proof
                )

        # Forged: a proof for another leaf, a shortened one, one for another size.
        root = merkle.root(data[:19])
        proof = await store.inclusion_proof(conn, 0, 5, 19)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_inclusion(5, 19, merkle.leaf_hash(data[5]), proof, root)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_inclusion(4, 19, merkle.leaf_hash(data[4]), proof[:-1], root)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_inclusion(4, 8, merkle.leaf_hash(data[4]), proof, root)
        other = await store.inclusion_proof(conn, 1, 5, 7)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_inclusion(4, 19, merkle.leaf_hash(data[4]), other, root)
        consistency = await store.consistency_proof(conn, 0, 8, 19)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_consistency(8, 21, merkle.root(data[:8]), merkle.root(data), consistency)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_consistency(8, 19, merkle.root(data[:9]), root, consistency)


async def test_proofs_beyond_the_tree_are_refused(pool: asyncpg.Pool[Any], keys: AuditKeys) -> None:
    async with pool.acquire() as conn:
        await append(conn, keys, 0, [6], every=100)
        for seq, size in ((0, 6), (7, 6), (3, 7), (1, 0)):
            with pytest.raises(ValueError, match=r"tree|not in"):
                await store.inclusion_proof(conn, 0, seq, size)
        for first, second in ((0, 3), (4, 3), (2, 7)):
            with pytest.raises(ValueError, match=r"tree|proof"):
                await store.consistency_proof(conn, 0, first, second)
        for size in (-1, 7, 1 << 64):
            with pytest.raises(ValueError, match="tree"):
                await store.tree_root(conn, 0, size)
        with pytest.raises(ValueError, match="tree"):
            await store.inclusion_proof(conn, 0, 1, 1 << 70)
        with pytest.raises(ValueError, match="tree"):
            await store.inclusion_proof(conn, 3, 1, 1)
        assert await store.consistency_proof(conn, 0, 6, 6) == []


async def test_a_chain_written_before_the_tree_gets_its_nodes_from_the_writer(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    """Entries appended before migration 0007 have no nodes: the writer builds them (from
    the entries' hashes) the first time it appends to or signs the chain."""
    async with pool.acquire() as conn:
        await append(conn, keys, 0, [5, 6], every=100)
        await append(conn, keys, 1, [9], every=100)
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM audit_tree")
        assert await store.tree_size(conn, 0) == 0

        await append(conn, keys, 0, [3], every=100)
        data = await leaves(conn, 0)
        assert await store.tree_size(conn, 0) == 14
        for n in range(15):
            assert await store.tree_root(conn, 0, n) == merkle.root(data[:n])

        # The timer's checkpoint builds an idle chain's tree too, and signs its root.
        assert await store.checkpoint(conn, 1, keys, role=ROLE, now=NOW)
        data = await leaves(conn, 1)
        assert await store.tree_size(conn, 1) == 9
        signed = await store.last_checkpoint(conn, 1)
        assert signed is not None and signed.root == merkle.root(data)
        assert note.open_note(signed.note or "", verifier(keys)).size == 9


async def test_the_append_signs_when_the_last_checkpoint_is_older_than_the_interval(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    after = timedelta(seconds=0.5)
    async with pool.acquire() as conn:

        async def add(i: int, now: datetime) -> bool:
            done = await store.append(
                conn,
                0,
                [record(i)],
                keys,
                role=ROLE,
                checkpoint_every=1000,
                now=now,
                checkpoint_after=after,
            )
            return done.checkpointed

        assert await add(0, NOW)  # a chain's first entry: no checkpoint yet
        assert not await add(1, NOW + timedelta(seconds=0.2))
        assert not await add(2, NOW + timedelta(seconds=0.4))
        assert await add(3, NOW + timedelta(seconds=0.5))
        assert not await add(4, NOW + timedelta(seconds=0.6))
        assert [c.seq for c in await store.checkpoints(conn)] == [1, 4]


async def test_a_redelivered_batch_leaves_the_tree_whole(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    batch = [record(i) for i in range(6)]
    async with pool.acquire() as conn:
        await store.append(conn, 0, batch, keys, role=ROLE, checkpoint_every=100, now=NOW)
        again = await store.append(
            conn, 0, [*batch[2:], record(50)], keys, role=ROLE, checkpoint_every=100, now=NOW
        )
        assert (again.written, again.duplicates) == (1, 4)
        data = await leaves(conn, 0)
        assert await store.tree_size(conn, 0) == 7
        assert await store.tree_root(conn, 0, 7) == merkle.root(data)


async def test_the_writers_role_cannot_change_or_remove_tree_nodes(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    async with pool.acquire() as conn:
        await append(conn, keys, 0, [4], every=100)
        for sql in (
            "UPDATE audit_tree SET hash = hash",
            "DELETE FROM audit_tree",
            "TRUNCATE audit_tree",
        ):
            for role in (ROLE, None):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        if role:
                            await conn.execute(f"SET LOCAL ROLE {role}")
                        await conn.execute(sql)
        assert await store.tree_size(conn, 0) == 4


async def test_the_writer_does_not_grow_a_tree_over_a_removed_node(
    pool: asyncpg.Pool[Any], keys: AuditKeys
) -> None:
    async with pool.acquire() as conn:
        await append(conn, keys, 0, [6], every=100)
        # Node (1, 2) over entries 5 and 6 is part of the tree's growing edge.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM audit_tree WHERE chain = 0 AND level = 1 AND idx = 2")
        with pytest.raises(store.TreeDamaged):
            await append(conn, keys, 0, [1], every=100)
        with pytest.raises(store.TreeDamaged):
            await store.checkpoint(conn, 0, keys, role=ROLE, now=NOW)
        assert await conn.fetchval("SELECT count(*) FROM audit_entries WHERE chain = 0") == 6
