"""The audit log: access records encrypted, chained and stored, then every entry verified;
and what making a read's access record durable costs the read (publish() latency)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from schemas.audit import AccessAction, AccessRecorded
from schemas.common import AccessOutcome, Discipline, Purpose, Sensitivity
from services.audit import chain as chains
from services.audit import keys as audit_keys
from services.audit import merkle, store
from services.audit.agents import GATHER_SECONDS, AuditWriter
from services.audit.keys import AuditKeys
from services.audit.reports import AuditReader
from services.audit.sink import AuditSink, KafkaAuditSink, OutboxAuditSink
from services.bench.harness import Figures, Run, percentile
from services.common.db import Conn
from services.common.dev_secrets import pipeline_keys

BATCH = 1000
CHAINS = 4
# Requests recording their reads at once (the API's pool is 20 connections).
CALLERS = 16

_NAMES = ("Amara Okafor", "Jonas Lindqvist", "Priya Raman", "Mateo Alvarez", "Grace Chen")
_REASONS = (
    "Reviewing medication list before the weekly care-team huddle.",
    "Updating the shared care plan after the home visit this morning.",
    "Checking lab results referenced in the referral from cardiology.",
)
_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126"
)


def record(n: int, at: datetime) -> AccessRecorded:
    """A realistic access record (~1 KB stored): sample names, not real people."""
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


async def audit(run: Run) -> Figures:
    """Batches of 1,000 records over 4 chains, appended as the audit writer appends them:
    the chains side by side, each on a connection of its own (a round of one batch a chain
    at a time); then `verify` over everything written."""
    keys = audit_keys.load(run.settings, create=True)
    now = datetime.now(UTC)
    batches = [
        [record(b * BATCH + i, now) for i in range(BATCH)]
        for b in range(max(1, run.sizes.audit_entries // BATCH))
    ]
    entries = len(batches) * BATCH

    async def append(conn: Conn, chain: int, records: list[AccessRecorded]) -> None:
        done = await store.append(
            conn,
            chain,
            records,
            keys,
            role=run.settings.audit_db_role,
            checkpoint_every=run.settings.audit_checkpoint_entries,
            log_name=run.settings.audit_log_name,
            now=now,
        )
        if done.written != len(records):
            raise AssertionError(f"{done.written} of {len(records)} records written")

    rounds = [batches[first : first + CHAINS] for first in range(0, len(batches), CHAINS)]
    append_rate = entries / await _side_by_side(run, rounds, append)
    floor = await _copy_floor(run, keys, batches)
    reader = AuditReader.of(run.pool, keys, run.settings)
    # Twice: in a process with other threads (this one's progress bar, a server's), the
    # first verify also starts the server the verifying processes fork from.
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        result = await reader.verify()
        rates.append(result.entries_checked / (time.perf_counter() - started))
        if not result.ok or result.entries_checked < entries:
            raise AssertionError(
                f"verify: ok={result.ok}, {result.entries_checked} entries checked"
            )
    return {
        "audit_append": append_rate,
        "raw_audit_copy": floor,
        "audit_verify": rates[1],
        "audit_verify_first": rates[0],
    }


async def _copy_floor(run: Run, keys: AuditKeys, batches: list[list[AccessRecorded]]) -> float:
    """What PostgreSQL alone costs the log's writes: the same records sealed beforehand,
    then COPYed with their tree nodes into tables shaped as the log's (its columns,
    partitioning and indexes), a transaction a batch, the chains side by side on a
    connection each, as audit() appends them. Entries a second."""
    sealers = [store.Sealer(keys, c, 0, chains.GENESIS) for c in range(CHAINS)]
    frontiers: list[list[bytes]] = [[] for _ in range(CHAINS)]
    rounds: list[list[_Sealed]] = []
    for first in range(0, len(batches), CHAINS):
        round_: list[_Sealed] = []
        for c, records in enumerate(batches[first : first + CHAINS]):
            sealer, size = sealers[c], sealers[c].seq
            rows = list(sealer.rows(records))
            nodes, frontiers[c] = store.grown(size, frontiers[c], sealer.hashes[size:])
            round_.append((rows, [(c, level, idx, digest) for level, idx, digest in nodes]))
        rounds.append(round_)
    async with run.pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE bench_audit_entries (LIKE audit_entries INCLUDING DEFAULTS"
            " INCLUDING CONSTRAINTS) PARTITION BY RANGE (at)"
        )
        await conn.execute(
            "CREATE TABLE bench_audit_entries_all PARTITION OF bench_audit_entries DEFAULT"
        )
        indexes = await conn.fetch(
            "SELECT indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = 'audit_entries'"
        )
        for row in indexes:
            made, found = _INDEX_ON.subn(r"\1 ON bench_audit_entries", row["indexdef"])
            if not found:
                raise AssertionError("an index of audit_entries the bench cannot copy")
            await conn.execute(made)
        await conn.execute("CREATE TABLE bench_audit_tree (LIKE audit_tree INCLUDING ALL)")

    async def write(conn: Conn, chain: int, work: _Sealed) -> None:
        rows, nodes = work
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_audit_entries", records=rows, columns=store.ENTRY_COLUMNS
            )
            await conn.copy_records_to_table(
                "bench_audit_tree", records=nodes, columns=store.TREE_COLUMNS
            )

    rate = sum(len(b) for b in batches) / await _side_by_side(run, rounds, write)
    async with run.pool.acquire() as conn:
        await conn.execute("DROP TABLE bench_audit_entries, bench_audit_tree")
    return rate


async def _side_by_side(
    run: Run,
    rounds: Sequence[Sequence[_Work]],
    write: Callable[[Conn, int, _Work], Awaitable[None]],
) -> float:
    """Seconds to write the rounds, each round's items side by side, item c to chain c on
    a connection of its own (as the audit writer appends its chains)."""
    async with contextlib.AsyncExitStack() as held:
        conns = [await held.enter_async_context(run.pool.acquire()) for _ in range(CHAINS)]
        started = time.perf_counter()
        for round_ in rounds:
            await asyncio.gather(*(write(conns[c], c, item) for c, item in enumerate(round_)))
        return time.perf_counter() - started


_Work = TypeVar("_Work")
_Node = tuple[int, int, int, bytes]  # a tree row: chain, level, index, hash
# A batch sealed beforehand: its entries' rows and its tree nodes' rows.
_Sealed = tuple[Sequence[Sequence[object]], Sequence[_Node]]
# An index definition as pg_indexes gives it: its name and table, to be put on another.
_INDEX_ON = re.compile(r"^(CREATE (?:UNIQUE )?INDEX) \S+ ON (?:ONLY )?\S+")


# --- timeliness: checkpoint lag at 2,000 entries/s, proof latency ----------------------

RATE = 2_000
# Chains of their own, apart from the ones the append step filled.
LAG_CHAINS = (100, 101, 102, 103)
# How often the observer looks for new checkpoints (it adds up to this to each lag).
_POLL = 0.005


async def checkpoint_lag(run: Run) -> Figures:
    """Records offered at 2,000/s to the audit writer (its append and its checkpoint
    timer, as the worker runs them), while an observer polls the checkpoints: for each
    entry, the time from its append's commit to the first checkpoint covering it seen."""
    settings = run.settings.model_copy(update={"topic_partitions": len(LAG_CHAINS)})
    audit_keys.load(settings, create=True)
    interval = settings.audit_checkpoint_seconds
    total = int(RATE * run.sizes.audit_lag_seconds)
    start_at = datetime.now(UTC)
    records = [record(i, start_at) for i in range(total)]
    writer = AuditWriter(settings)
    # Per chain: (head seq after an append, entries it wrote, when it committed).
    committed: dict[int, list[tuple[int, int, float]]] = {c: [] for c in LAG_CHAINS}
    # Per chain: (checkpointed seq, when the observer first saw it).
    seen: dict[int, list[tuple[int, float]]] = {c: [] for c in LAG_CHAINS}
    heads = dict.fromkeys(LAG_CHAINS, 0)
    done = asyncio.Event()

    async def timer() -> None:  # Faust's @app.timer: every `interval`, whatever each takes
        next_at = time.perf_counter()
        while not done.is_set():
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await writer.checkpoint_heads()

    async def observe() -> None:
        async with run.pool.acquire() as conn:
            while True:
                rows = await conn.fetch(
                    "SELECT chain, max(seq) AS seq FROM audit_checkpoints"
                    " WHERE chain = ANY($1::int[]) GROUP BY chain",
                    list(LAG_CHAINS),
                )
                now = time.perf_counter()
                for row in rows:
                    marks = seen[row["chain"]]
                    if not marks or marks[-1][0] < row["seq"]:
                        marks.append((row["seq"], now))
                if done.is_set() and all(
                    seen[c] and seen[c][-1][0] >= heads[c] for c in LAG_CHAINS
                ):
                    return
                await asyncio.sleep(_POLL)

    async def append(chain: int, batch: list[AccessRecorded]) -> None:
        await writer.append(chain, [(None, r) for r in batch])
        heads[chain] += len(batch)
        committed[chain].append((heads[chain], len(batch), time.perf_counter()))

    async def offer() -> None:  # the agent: take what has arrived (as it gathers), append it
        began, taken = time.perf_counter(), 0
        while taken < total:
            await asyncio.sleep(GATHER_SECONDS)
            due = min(total, int((time.perf_counter() - began) * RATE))
            batch, taken = records[taken:due], due
            by_chain: dict[int, list[AccessRecorded]] = {}
            for i, r in enumerate(batch):
                by_chain.setdefault(LAG_CHAINS[i % len(LAG_CHAINS)], []).append(r)
            await asyncio.gather(*(append(c, b) for c, b in by_chain.items()))

    began = time.perf_counter()
    tasks = [asyncio.create_task(timer()), asyncio.create_task(observe())]
    try:
        await offer()
        offered_for = time.perf_counter() - began
        done.set()
        await asyncio.wait_for(tasks[1], timeout=10 * interval + 5)
    finally:
        done.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writer.close()
    lags: list[float] = []
    for chain in LAG_CHAINS:
        marks = seen[chain]
        for head_seq, count, at in committed[chain]:
            covered = next(t for seq, t in marks if seq >= head_seq)
            lags.extend([max(0.0, covered - at)] * count)
    async with run.pool.acquire() as conn:
        signed = await conn.fetchval(
            "SELECT count(*) FROM audit_checkpoints WHERE chain = ANY($1::int[])",
            list(LAG_CHAINS),
        )
    return {
        "audit_checkpoint_lag_p99": percentile(lags, 0.99) * 1000,
        "audit_checkpoint_lag_p50": percentile(lags, 0.50) * 1000,
        "audit_checkpoint_lag_max": max(lags) * 1000,
        "audit_checkpoints_per_chain": signed / len(LAG_CHAINS) / offered_for,
        "audit_lag_entries_per_s": total / offered_for,
    }


# A chain of its own for the proof tree (synthetic leaves: proofs read only the nodes).
PROOF_CHAIN = 1_000_000


async def proofs(run: Run) -> Figures:
    """Inclusion and consistency proofs from the store over a tree of
    `audit_tree_leaves` leaves, each asked on its own, one connection."""
    size = run.sizes.audit_tree_leaves
    leaves = [secrets.token_bytes(32) for _ in range(size)]
    nodes = merkle.new_nodes(0, (), leaves)
    async with run.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "audit_tree",
            records=((PROOF_CHAIN, level, idx, digest) for level, idx, digest in nodes),
            columns=("chain", "level", "idx", "hash"),
        )
        await conn.execute("ANALYZE audit_tree")
    del nodes
    by_size = {size: merkle.root(leaves)}
    by_size[size // 2] = await _root(run, size // 2)
    rng = random.Random(19)  # noqa: S311 - which proofs are timed, not secrets
    inclusion: list[float] = []
    consistency: list[float] = []
    async with run.pool.acquire() as conn:
        for i in range(run.sizes.audit_proofs):
            seq = rng.randint(1, size)
            started = time.perf_counter()
            path = await store.inclusion_proof(conn, PROOF_CHAIN, seq, size)
            inclusion.append(time.perf_counter() - started)
            first = rng.randint(1, size // 2)
            started = time.perf_counter()
            proof = await store.consistency_proof(conn, PROOF_CHAIN, first, size // 2)
            consistency.append(time.perf_counter() - started)
            if i < 20:  # the proofs timed are proofs
                leaf = merkle.leaf_hash(leaves[seq - 1])
                merkle.verify_inclusion(seq - 1, size, leaf, path, by_size[size])
                first_root = await store.tree_root(conn, PROOF_CHAIN, first)
                merkle.verify_consistency(first, size // 2, first_root, by_size[size // 2], proof)
    return {
        "audit_inclusion_p50": percentile(inclusion, 0.50) * 1000,
        "audit_inclusion_p99": percentile(inclusion, 0.99) * 1000,
        "audit_consistency_p50": percentile(consistency, 0.50) * 1000,
        "audit_consistency_p99": percentile(consistency, 0.99) * 1000,
        "audit_proof_tree_leaves": float(size),
    }


async def _root(run: Run, size: int) -> bytes:
    async with run.pool.acquire() as conn:
        return await store.tree_root(conn, PROOF_CHAIN, size)


async def sinks(run: Run) -> Figures:
    """publish() of one access record (a read's), 16 callers at once: to the audit outbox
    (committed in PostgreSQL, the default) and, in turn, to care.audit (acks=all) as the
    API did before the outbox, which on the memory-only embedded broker is not durable."""
    pipeline_keys(run.settings, create=True)  # the run's own DEV key, in its data dir
    now = datetime.now(UTC)
    outbox = await _latencies(OutboxAuditSink(run.pool, run.settings), run.sizes.publishes, now)
    kafka = await _latencies(KafkaAuditSink(run.settings), run.sizes.publishes, now)
    return {
        "audit_outbox_p50": percentile(outbox, 0.50),
        "audit_outbox_p99": percentile(outbox, 0.99),
        "audit_kafka_p50": percentile(kafka, 0.50),
        "audit_kafka_p99": percentile(kafka, 0.99),
    }


async def _latencies(sink: AuditSink, count: int, now: datetime) -> list[float]:
    """Milliseconds per publish() of one record, `count` of them over CALLERS callers."""
    latencies: list[float] = []

    async def caller(first: int) -> None:
        for n in range(first, count, CALLERS):
            one = [record(n, now)]
            started = time.perf_counter()
            await sink.publish(one)
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        # Warm-up: the producer started, the statement prepared on every connection.
        await asyncio.gather(*(sink.publish([record(n, now)]) for n in range(CALLERS)))
        await asyncio.gather(*(caller(first) for first in range(CALLERS)))
    finally:
        await sink.close()
    return latencies
