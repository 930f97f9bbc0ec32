"""Verifying the whole stored log in one consistent snapshot. Chains are independent, so a
large log's chains are split over worker processes, each reading in the same snapshot
(pg_export_snapshot) on a connection of its own; the checkpoints are checked once every
chain is in. A small log, or a reader with no database address, is verified in process."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.audit import archive_store, store
from services.audit.keys import LogKeys, ReaderKeys
from services.audit.verify import BLOCK_BITS, Part, Verification, Verifier
from services.common import db
from services.common.db import Conn

# Entries below which one process verifies the log: starting a worker costs about as much
# as verifying this many on the second core saves.
SPLIT_FROM = 20_000
_SNAPSHOT = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")

MakeVerifier = Callable[..., Verifier]  # verifier(node_digests=...)


@dataclass(frozen=True)
class _Job:
    """What one worker process verifies, and with what (picklable: no key objects)."""

    dsn: str
    snapshot: str
    chains: tuple[int, ...]
    records: dict[str, bytes]
    current: str
    index_key: bytes
    public_key: bytes
    log_name: str
    unsigned_before: datetime | None
    checkpoints: tuple[store.Checkpoint, ...]


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    return _GATES.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(1))


async def verify_log(
    pool: asyncpg.Pool[Any],
    keys: LogKeys,
    *,
    log_name: str,
    public_key: Ed25519PublicKey | None,
    unsigned_grace: timedelta | None,
    dsn: str | None,
    workers: int,
    split_from: int = SPLIT_FROM,
) -> Verification:
    """Check the whole log in one consistent snapshot (see AuditReader.verify); its chains
    over up to `workers` processes when `dsn` is given and the log has `split_from`
    entries or more. One verify at a time per process (and event loop): each may start
    `workers` processes, and a caller asking many times at once must not start many."""
    async with (
        _gate(),
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        checkpoints = await store.checkpoints(conn)
        now = await conn.fetchval("SELECT now()")
        unsigned_before = now - unsigned_grace if unsigned_grace else None

        def verifier(*, node_digests: bool = False, tree: bool = True) -> Verifier:
            made = Verifier(
                keys,
                public_key=public_key,
                unsigned_before=unsigned_before,
                log_name=log_name,
                tree=tree,
                node_digests=node_digests,
            )
            made.expect_checkpoints(checkpoints)
            return made

        groups: list[tuple[int, ...]] = []
        if dsn and workers > 1:
            sizes = await store.chain_sizes(conn)
            for cp in checkpoints:
                sizes.setdefault(cp.chain, 0)
            if sum(sizes.values()) >= split_from:
                groups = split(sizes, workers)
        if len(groups) < 2 or dsn is None:
            return (await verify_chains(conn, verifier, None)).result(checkpoints)
        snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
        raw = keys.verify_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        jobs = [
            _Job(
                dsn,
                snapshot,
                chains,
                dict(keys.records),
                keys.current,
                keys.index_key,
                raw,
                log_name,
                unsigned_before,
                tuple(cp for cp in checkpoints if cp.chain in chains),
            )
            for chains in groups
        ]
        # The workers read in this transaction's snapshot: it stays open until they end.
        parts = await _run(jobs)
        merged = verifier(tree=False)
        for part in parts:
            merged.merge(part)
        return merged.result(checkpoints)


def split(sizes: dict[int, int], workers: int) -> list[tuple[int, ...]]:
    """The chains in up to `workers` groups of about equal entries (largest first, each to
    the lightest group), each group in chain order."""
    loads = [(0, i, list[int]()) for i in range(min(workers, len(sizes)))]
    for chain, size in sorted(sizes.items(), key=lambda cs: (-cs[1], cs[0])):
        load, i, chains = min(loads)
        chains.append(chain)
        loads[i] = (load + size, i, chains)
    return [tuple(sorted(chains)) for _, _, chains in loads if chains]


def _context() -> multiprocessing.context.BaseContext:
    """fork where this process runs one thread: the worker starts with the modules already
    imported (spawning one costs half a second), uses none of this process's connections
    and starts its own event loop. With other threads (a lock one holds would stay held in
    the child), forkserver: a clean server process, started once, forks the workers."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


async def _run(jobs: Sequence[_Job]) -> list[Part]:
    context = _context()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, _work, j) for j in jobs)))


def _work(job: _Job) -> Part:
    return asyncio.run(_verify_job(job))


async def _verify_job(job: _Job) -> Part:
    if not _SNAPSHOT.fullmatch(job.snapshot):
        raise ValueError("not a snapshot id")
    keys = ReaderKeys(
        records=job.records,
        current=job.current,
        index_key=job.index_key,
        source="the verifying process",
        public_key=Ed25519PublicKey.from_public_bytes(job.public_key),
    )

    def verifier(*, node_digests: bool = False) -> Verifier:
        made = Verifier(
            keys,
            unsigned_before=job.unsigned_before,
            log_name=job.log_name,
            node_digests=node_digests,
        )
        made.expect_checkpoints(job.checkpoints)
        return made

    conn = await db.connect(job.dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            return (await verify_chains(conn, verifier, job.chains)).part()
    finally:
        await conn.close()


async def verify_chains(
    conn: Conn, verifier: MakeVerifier, chains: Sequence[int] | None
) -> Verifier:
    """Feed a verifier the entries of `chains` (None: all) and compare their tree, inside
    the open snapshot: a block of nodes at a time (one digest each), and only when a block
    differs, again node by node, to name the first bad node."""
    quick = verifier(node_digests=True)
    stored = await store.tree_node_digests(conn, BLOCK_BITS, chains)
    quick.expect_node_digests(tuple(r) for r in stored)
    await _feed_entries(conn, quick, chains)
    if not quick.tree_differs():
        return quick
    each = verifier(node_digests=False)
    nodes = await store.tree_nodes_in_append_order(conn, chains)
    await _feed_entries(conn, each, chains, nodes)
    while rows := await nodes.fetch(5000):
        each.feed_nodes(rows)
    return each


async def _feed_entries(
    conn: Conn,
    verifier: Verifier,
    chains: Sequence[int] | None,
    nodes: asyncpg.cursor.Cursor[Any] | None = None,
) -> None:
    """Every entry of `chains` to the verifier, in chain order; with the stored nodes (as
    many as the entries made, so both queues stay short) when given."""
    archived = await archive_store.archived_seqs(conn)
    if chains is not None:
        archived = {c: runs for c, runs in archived.items() if c in chains}
    entries = store.entry_rows_in_chain_order(conn, chains=chains)
    async for rows in archive_store.with_archived(conn, entries, archived):
        verifier.feed_rows(rows)
        if nodes is not None and (wanted := verifier.nodes_pending()):
            verifier.feed_nodes(await nodes.fetch(wanted))
