"""The audit tables: appending records to a chain (encrypted, hashed, deduplicated),
signing checkpoints, and reading entries back for reports and verification."""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas.audit import AccessRecorded
from schemas.codec import encode_access
from services.audit import chain as chains
from services.audit import cipher, outbox
from services.audit.keys import AuditKeys
from services.common.db import Conn

# pg_advisory_xact_lock(AUDIT_LOCK, chain): one writer per chain at a time.
AUDIT_LOCK = 720_635_005

ENTRY_COLUMNS = (
    "at",
    "chain",
    "seq",
    "record_id",
    "key_id",
    "ciphertext",
    "prev_hash",
    "hash",
    "patient_ix",
    "actor_ix",
    "outcome",
    "purpose",
    "sensitivity",
)
_SELECT_CHECKPOINT = (
    "SELECT chain, seq, hash, signed_at, signing_key_id, signature, prev_digest"
    " FROM audit_checkpoints"
)
_SELECT_ENTRY = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_entries"  # noqa: S608 - constants


@dataclass(frozen=True)
class Entry:
    """One stored row of the audit log, as it lies in the table."""

    at: datetime
    chain: int
    seq: int
    record_id: str
    key_id: str
    ciphertext: bytes
    prev_hash: bytes
    hash: bytes
    patient_ix: bytes | None
    actor_ix: bytes
    outcome: str
    purpose: str
    sensitivity: tuple[str, ...]

    @property
    def label(self) -> str:
        """How the API and the CLI name an entry: 'chain:seq'."""
        return f"{self.chain}:{self.seq}"


# An entry as a row of its ENTRY_COLUMNS values.
entry_row = operator.attrgetter(*ENTRY_COLUMNS)
# A row as COPY takes it, in ENTRY_COLUMNS order.
_Row = tuple[
    datetime,
    int,
    int,
    str,
    str,
    bytes,
    bytes,
    bytes,
    bytes | None,
    bytes,
    str,
    str,
    tuple[str, ...],
]


@dataclass(frozen=True)
class Checkpoint:
    chain: int
    seq: int
    hash: bytes
    signed_at: datetime
    signing_key_id: str
    signature: bytes
    # Digest of the chain's previous checkpoint (GENESIS for its first).
    prev_digest: bytes = chains.GENESIS


@dataclass(frozen=True)
class Appended:
    written: int
    duplicates: int
    head_seq: int
    checkpointed: bool


def seal(keys: AuditKeys, chain: int, seq: int, prev: bytes, record: AccessRecorded) -> Entry:
    """The row a record becomes at (chain, seq) after the entry whose hash is `prev`."""
    return Entry(*_Sealer(keys, chain, seq - 1, prev).row(record))


class _Sealer:
    """seal() for a run of records appended to one chain: the key lookups done once, the
    nonces drawn together. Each row() is the chain's next entry, in ENTRY_COLUMNS order."""

    def __init__(self, keys: AuditKeys, chain: int, head_seq: int, head_hash: bytes) -> None:
        self.chain = chain
        self.seq = head_seq
        self.prev = head_hash
        self.key_id, self._encrypt = cipher.encryptor(keys)
        self._patient_ix = cipher.blinder(keys.index_key, "patient")
        self._actor_ix = cipher.blinder(keys.index_key, "actor")
        self._nonces: list[bytes] = []

    def rows(self, records: Sequence[AccessRecorded]) -> Iterator[_Row]:
        """The records' rows, each made as it is taken: COPY sends the first ones to the
        server while the later ones are sealed."""
        self._nonces = cipher.nonces(len(records))
        for record in records:
            yield self.row(record)

    def row(self, record: AccessRecorded) -> _Row:
        chain, seq, prev, key_id = self.chain, self.seq + 1, self.prev, self.key_id
        record_id = record.record_id
        nonce = self._nonces.pop() if self._nonces else cipher.nonces(1)[0]
        blob = self._encrypt(nonce, encode_access(record), cipher.place(chain, seq, record_id))
        digest = chains.entry_hash(chain, seq, prev, key_id, blob)
        patient = record.patient_id
        sensitivity = record.sensitivity
        self.seq, self.prev = seq, digest
        return (
            record.at,
            chain,
            seq,
            record_id,
            key_id,
            blob,
            prev,
            digest,
            self._patient_ix(patient) if patient else None,
            self._actor_ix(record.actor_id),
            record.outcome.value,
            record.purpose.value,
            tuple(s.value for s in sensitivity) if sensitivity else (),
        )


async def append(
    conn: Conn,
    chain: int,
    records: Sequence[AccessRecorded],
    keys: AuditKeys,
    *,
    role: str,
    checkpoint_every: int,
    now: datetime,
) -> Appended:
    """Append the records not already in the log to `chain`, in one transaction that also
    takes them out of the audit outbox, and sign a checkpoint when `checkpoint_every`
    entries have passed since the last one."""
    await ensure_partitions(conn, [r.at for r in records])
    unique = list({r.record_id: r for r in reversed(records)}.values())[::-1]
    # A record already stored (a redelivery) is rare: write at once, and only when the
    # unique (record_id, at) index refuses one, look up which are stored and write the rest.
    try:
        async with conn.transaction():
            written, head_seq, signed = await _write(
                conn, chain, unique, keys, role, checkpoint_every, now, look_up=False
            )
    except asyncpg.UniqueViolationError:
        async with conn.transaction():
            written, head_seq, signed = await _write(
                conn, chain, unique, keys, role, checkpoint_every, now, look_up=True
            )
    return Appended(written, len(records) - written, head_seq, signed)


async def _write(
    conn: Conn,
    chain: int,
    unique: list[AccessRecorded],
    keys: AuditKeys,
    role: str,
    checkpoint_every: int,
    now: datetime,
    *,
    look_up: bool,
) -> tuple[int, int, bool]:
    """In the open transaction: append the records (those not stored yet, when `look_up`)
    to the chain and sign a checkpoint when one is due; (written, head seq, signed)."""
    await _hold_chain(conn, chain, role)
    fresh = await _not_yet_stored(conn, unique) if look_up else unique
    sealer = _Sealer(keys, chain, *await head(conn, chain))
    if fresh:
        await conn.copy_records_to_table(
            "audit_entries", records=sealer.rows(fresh), columns=ENTRY_COLUMNS
        )
    # In the log and out of the outbox in one transaction: never neither, and a record
    # stays queued (to be sent again) until it is appended.
    await outbox.remove(conn, [r.record_id for r in unique])
    head_seq, head_hash = sealer.seq, sealer.prev
    signed = False
    last = await last_checkpoint(conn, chain)
    if head_seq - (last.seq if last else 0) >= checkpoint_every:
        await _sign(conn, keys, chain, head_seq, head_hash, now, last)
        signed = True
    return len(fresh), head_seq, signed


async def ensure_partitions(conn: Conn, moments: Sequence[datetime]) -> None:
    """Make the month partitions these moments fall in, in a statement of its own (making
    one locks the whole table: never while holding a chain's lock). The function is the
    owner's; the writer may run it as a member of carecoord_audit."""
    months = {_month(m) for m in set(moments)}
    await conn.execute(
        "SELECT audit_ensure_partition(m) FROM unnest($1::timestamptz[]) AS m", sorted(months)
    )


def _month(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def checkpoint(conn: Conn, chain: int, keys: AuditKeys, *, role: str, now: datetime) -> bool:
    """Sign the chain's head unless the last checkpoint already covers it."""
    async with conn.transaction():
        await _hold_chain(conn, chain, role)
        head_seq, head_hash = await head(conn, chain)
        last = await last_checkpoint(conn, chain)
        if head_seq <= (last.seq if last else 0):
            return False
        await _sign(conn, keys, chain, head_seq, head_hash, now, last)
        return True


async def _hold_chain(conn: Conn, chain: int, role: str) -> None:
    """In the open transaction: work as the writer's role and hold the chain's lock."""
    if role:
        await conn.execute(f'SET LOCAL ROLE "{role}"')
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", AUDIT_LOCK, chain)


async def head(conn: Conn, chain: int) -> tuple[int, bytes]:
    row = await conn.fetchrow(
        "SELECT seq, hash FROM audit_entries WHERE chain = $1 ORDER BY seq DESC LIMIT 1", chain
    )
    return (0, chains.GENESIS) if row is None else (int(row["seq"]), bytes(row["hash"]))


async def last_checkpoint(conn: Conn, chain: int) -> Checkpoint | None:
    row = await conn.fetchrow(
        f"{_SELECT_CHECKPOINT} WHERE chain = $1 ORDER BY seq DESC LIMIT 1", chain
    )
    return None if row is None else _checkpoint(row)


async def _sign(
    conn: Conn,
    keys: AuditKeys,
    chain: int,
    seq: int,
    head_hash: bytes,
    now: datetime,
    last: Checkpoint | None,
) -> None:
    prev = chains.checkpoint_digest(last.signature) if last else chains.GENESIS
    signature = chains.sign_checkpoint(keys.signing_key, chain, seq, head_hash, now, prev)
    await conn.execute(
        "INSERT INTO audit_checkpoints"
        " (chain, seq, hash, signed_at, signing_key_id, signature, prev_digest)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        chain,
        seq,
        head_hash,
        now,
        keys.signing_key_id,
        signature,
        prev,
    )


async def _not_yet_stored(conn: Conn, records: Sequence[AccessRecorded]) -> list[AccessRecorded]:
    """The records (each id once) not in the log yet."""
    unique = records
    if not unique:
        return []
    # A join on the unique (record_id, at) index: one probe per record, however big the
    # month's partition has grown.
    stored = await conn.fetch(
        "SELECT e.record_id FROM unnest($1::text[], $2::timestamptz[]) AS u(record_id, at)"
        " JOIN audit_entries AS e ON e.record_id = u.record_id AND e.at = u.at",
        [r.record_id for r in unique],
        [r.at for r in unique],
    )
    seen = {row["record_id"] for row in stored}
    return [r for r in unique if r.record_id not in seen]


# --- reading -------------------------------------------------------------------------


def _entry(row: object) -> Entry:
    values = dict(row)  # type: ignore[call-overload]  # an asyncpg Record
    values["ciphertext"] = bytes(values["ciphertext"])
    values["prev_hash"] = bytes(values["prev_hash"])
    values["hash"] = bytes(values["hash"])
    if values["patient_ix"] is not None:
        values["patient_ix"] = bytes(values["patient_ix"])
    values["actor_ix"] = bytes(values["actor_ix"])
    values["sensitivity"] = tuple(values["sensitivity"])
    return Entry(**values)


async def entries_in_chain_order(conn: Conn, *, chunk: int = 5000) -> AsyncIterator[Entry]:
    """Every entry, chain by chain, in sequence order (inside a transaction)."""
    async for row in conn.cursor(f"{_SELECT_ENTRY} ORDER BY chain, seq", prefetch=chunk):
        yield _entry(row)


async def entry_rows_in_chain_order(
    conn: Conn, *, chunk: int = 5000
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    """Every entry as a row of ENTRY_COLUMNS values, chain by chain in sequence order,
    `chunk` rows at a time (inside a transaction)."""
    cursor = await conn.cursor(f"{_SELECT_ENTRY} ORDER BY chain, seq")
    while rows := await cursor.fetch(chunk):
        yield rows


async def checkpoints(conn: Conn) -> list[Checkpoint]:
    return [_checkpoint(r) for r in await conn.fetch(f"{_SELECT_CHECKPOINT} ORDER BY chain, seq")]


def _checkpoint(r: Any) -> Checkpoint:
    return Checkpoint(
        chain=r["chain"],
        seq=r["seq"],
        hash=bytes(r["hash"]),
        signed_at=r["signed_at"],
        signing_key_id=r["signing_key_id"],
        signature=bytes(r["signature"]),
        prev_digest=bytes(r["prev_digest"]),
    )


@dataclass(frozen=True)
class Filter:
    """What a search narrows to; index values are blind indexes, not ids."""

    patient_ix: bytes | None = None
    actor_ix: bytes | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcomes: tuple[str, ...] = ()
    # Outcomes left out (the trail without security events).
    not_outcomes: tuple[str, ...] = ()
    sensitivity: str | None = None
    # Purposes left out (the accounting of disclosures leaves out TPO).
    not_purposes: tuple[str, ...] = ()
    # Only entries with no event stream `<prefix><chain>:<seq>` (no review yet).


async def search(
    conn: Conn,
    where: Filter,
    *,
    after: tuple[datetime, int, int] | None = None,
    limit: int | None = None,
) -> list[Entry]:
    """Entries matching the filter, oldest first (at, chain, seq), after a cursor."""
    clauses: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.patient_ix is not None:
        clauses.append(f"patient_ix = {arg(where.patient_ix)}")
    if where.actor_ix is not None:
        clauses.append(f"actor_ix = {arg(where.actor_ix)}")
    if where.since is not None:
        clauses.append(f"at >= {arg(where.since)}")
    if where.until is not None:
        clauses.append(f"at <= {arg(where.until)}")
    if where.outcomes:
        clauses.append(f"outcome = ANY({arg(list(where.outcomes))}::text[])")
    if where.not_outcomes:
        clauses.append(f"NOT (outcome = ANY({arg(list(where.not_outcomes))}::text[]))")
    if where.sensitivity is not None:
        clauses.append(f"{arg(where.sensitivity)} = ANY(sensitivity)")
    if where.not_purposes:
        clauses.append(f"NOT (purpose = ANY({arg(list(where.not_purposes))}::text[]))")
    if after is not None:
        at, chain, seq = after
        clauses.append(f"(at, chain, seq) > ({arg(at)}, {arg(chain)}, {arg(seq)})")
    sql = _SELECT_ENTRY
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY at, chain, seq"
    if limit is not None:
        sql += f" LIMIT {arg(limit)}"
    return [_entry(row) for row in await conn.fetch(sql, *args)]


async def entry(conn: Conn, chain: int, seq: int) -> Entry | None:
    row = await conn.fetchrow(f"{_SELECT_ENTRY} WHERE chain = $1 AND seq = $2", chain, seq)
    return None if row is None else _entry(row)
