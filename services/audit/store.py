"""The audit tables: appending records to a chain (encrypted, hashed, deduplicated),
signing checkpoints, and reading entries back for reports and verification."""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from schemas.audit import AccessRecorded
from schemas.codec import encode_access
from services.audit import chain as chains
from services.audit import cipher, merkle, note, outbox
from services.audit.keys import AuditKeys
from services.common.db import Conn

# pg_advisory_xact_lock(AUDIT_LOCK, chain): one writer per chain at a time.
AUDIT_LOCK = 720_635_005
# The name the checkpoints' signed notes carry (the key name) and their origins start
# with; settings.audit_log_name (CARECOORD_AUDIT_LOG_NAME) has the same default.
LOG_NAME = "carecoord.local/audit"
# The checkpoint note's extension line naming when it was signed (covered by the signature).
SIGNED_AT = "carecoord-signed-at"
# A chain written before the tree existed gets its nodes built this many entries at a time.
_CATCH_UP_CHUNK = 20_000

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
TREE_COLUMNS = ("chain", "level", "idx", "hash")
_SELECT_CHECKPOINT = (
    "SELECT chain, seq, hash, signed_at, signing_key_id, signature, prev_digest, root, note"
    " FROM audit_checkpoints"
)
# The stored nodes (level, idx) of a chain asked for, in one probe each of the primary key.
_SELECT_NODES = (
    "SELECT t.level, t.idx, t.hash FROM audit_tree AS t"
    " JOIN unnest($2::smallint[], $3::bigint[]) AS u(level, idx)"
    " ON t.chain = $1 AND t.level = u.level AND t.idx = u.idx"
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
    # The Merkle tree's root at size `seq`, and the C2SP signed note (tlog-checkpoint) of
    # origin, size and root that outsiders check; None for checkpoints signed before the
    # tree existed.
    root: bytes | None = None
    note: str | None = None


@dataclass(frozen=True)
class Appended:
    written: int
    duplicates: int
    head_seq: int
    checkpointed: bool


def seal(keys: AuditKeys, chain: int, seq: int, prev: bytes, record: AccessRecorded) -> Entry:
    """The row a record becomes at (chain, seq) after the entry whose hash is `prev`."""
    return Entry(*Sealer(keys, chain, seq - 1, prev).row(record))


class Sealer:
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
        # The hashes of the entries made, in order: the tree's new leaves.
        self.hashes: list[bytes] = []

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
        self.hashes.append(digest)
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
    checkpoint_after: timedelta | None = None,
    log_name: str = LOG_NAME,
) -> Appended:
    """Append the records not already in the log to `chain`, with the Merkle tree's new
    nodes, in one transaction that also takes them out of the audit outbox, and sign a
    checkpoint when `checkpoint_every` entries have passed since the last one, or (when
    given) `checkpoint_after` has since it was signed."""
    due = _Due(checkpoint_every, checkpoint_after, log_name)
    await ensure_partitions(conn, [r.at for r in records])
    unique = list({r.record_id: r for r in reversed(records)}.values())[::-1]
    # A record already stored (a redelivery) is rare: write at once, and only when the
    # unique (record_id, at) index refuses one, look up which are stored and write the rest.
    try:
        async with conn.transaction():
            written, head_seq, signed = await _write(
                conn, chain, unique, keys, role, due, now, look_up=False
            )
    except asyncpg.UniqueViolationError:
        async with conn.transaction():
            written, head_seq, signed = await _write(
                conn, chain, unique, keys, role, due, now, look_up=True
            )
    return Appended(written, len(records) - written, head_seq, signed)


@dataclass(frozen=True)
class _Due:
    """When the append transaction signs a checkpoint, and under what name."""

    every: int
    after: timedelta | None
    log_name: str

    def now(self, head_seq: int, last: Checkpoint | None, now: datetime) -> bool:
        if last is None:
            return head_seq >= self.every or (self.after is not None and head_seq > 0)
        if head_seq <= last.seq:
            return False
        return head_seq - last.seq >= self.every or (
            self.after is not None and now - last.signed_at >= self.after
        )


async def _write(
    conn: Conn,
    chain: int,
    unique: list[AccessRecorded],
    keys: AuditKeys,
    role: str,
    due: _Due,
    now: datetime,
    *,
    look_up: bool,
) -> tuple[int, int, bool]:
    """In the open transaction: append the records (those not stored yet, when `look_up`)
    to the chain and its tree, and sign a checkpoint when one is due; (written, head seq,
    signed)."""
    await _hold_chain(conn, chain, role)
    fresh = await _not_yet_stored(conn, unique) if look_up else unique
    size, head_hash = await head(conn, chain)
    frontier = await _frontier(conn, chain, size)
    sealer = Sealer(keys, chain, size, head_hash)
    if fresh:
        await conn.copy_records_to_table(
            "audit_entries", records=sealer.rows(fresh), columns=ENTRY_COLUMNS
        )
        frontier = await _grow(conn, chain, size, frontier, sealer.hashes)
    # In the log and out of the outbox in one transaction: never neither, and a record
    # stays queued (to be sent again) until it is appended.
    await outbox.remove(conn, [r.record_id for r in unique])
    head_seq, head_hash = sealer.seq, sealer.prev
    signed = False
    last = await last_checkpoint(conn, chain)
    if due.now(head_seq, last, now):
        root = merkle.fold(frontier)
        await _sign(conn, keys, chain, head_seq, head_hash, now, last, root, due.log_name)
        signed = True
    return len(fresh), head_seq, signed


async def _grow(
    conn: Conn, chain: int, size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]
) -> list[bytes]:
    """Store the nodes that appending `leaves` (entry hashes) to the chain's tree of `size`
    leaves creates; the new tree's frontier (the hashes of root_ranges(new size))."""
    nodes, grown_frontier = grown(size, frontier, leaves)
    await conn.copy_records_to_table(
        "audit_tree",
        records=((chain, level, idx, digest) for level, idx, digest in nodes),
        columns=TREE_COLUMNS,
    )
    return grown_frontier


def grown(
    size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]
) -> tuple[list[tuple[int, int, bytes]], list[bytes]]:
    """The nodes (level, index, hash) that appending `leaves` to a tree of `size` leaves
    with this frontier creates, and the new tree's frontier."""
    nodes = merkle.new_nodes(size, frontier, leaves)
    wanted = merkle.root_ranges(size + len(leaves))
    found = dict(zip(merkle.root_ranges(size), frontier, strict=True))
    keep = set(wanted)
    found.update((n, digest) for level, idx, digest in nodes if (n := (level, idx)) in keep)
    return nodes, [found[n] for n in wanted]


async def _frontier(conn: Conn, chain: int, size: int) -> list[bytes]:
    """In the open transaction, holding the chain's lock: the hashes of the tree's nodes
    root_ranges(size), for a chain of `size` entries. A chain written before the tree
    existed (its nodes missing) first gets them, built from its entries."""
    wanted = merkle.root_ranges(size)
    found = await tree_nodes(conn, chain, wanted)
    if len(found) < len(wanted):
        await _catch_up(conn, chain, size)
        found = await tree_nodes(conn, chain, wanted)
        if len(found) < len(wanted):
            raise TreeDamaged(f"chain {chain}: the tree lacks nodes its entries need")
    return [found[n] for n in wanted]


async def _catch_up(conn: Conn, chain: int, size: int) -> None:
    """Build the tree nodes of the chain's entries that have none (those appended before
    the tree existed), in order, from the entries' hashes."""
    built = await tree_size(conn, chain)
    if built > size:
        raise TreeDamaged(f"chain {chain}: the tree has {built} leaves, the chain {size} entries")
    found = await tree_nodes(conn, chain, merkle.root_ranges(built))
    frontier = [found[n] for n in merkle.root_ranges(built) if n in found]
    if len(frontier) != len(merkle.root_ranges(built)):
        raise TreeDamaged(f"chain {chain}: the tree lacks nodes of its first {built} leaves")
    while built < size:
        rows = await conn.fetch(
            "SELECT seq, hash FROM audit_entries WHERE chain = $1 AND seq > $2 AND seq <= $3"
            " ORDER BY seq",
            chain,
            built,
            min(size, built + _CATCH_UP_CHUNK),
        )
        if not rows or [r["seq"] for r in rows] != list(range(built + 1, built + 1 + len(rows))):
            raise TreeDamaged(f"chain {chain}: entries after {chain}:{built} are missing")
        frontier = await _grow(conn, chain, built, frontier, [bytes(r["hash"]) for r in rows])
        built += len(rows)


class TreeDamaged(RuntimeError):
    """The stored tree does not fit the chain's entries: changed behind the writer's back
    (`carecoord audit verify` names where)."""


async def tree_nodes(
    conn: Conn, chain: int, wanted: Iterable[merkle.Node]
) -> dict[merkle.Node, bytes]:
    """The stored nodes among `wanted`, by (level, index): one indexed read."""
    levels, indexes = [], []
    for level, idx in set(wanted):
        levels.append(level)
        indexes.append(idx)
    if not levels:
        return {}
    rows = await conn.fetch(_SELECT_NODES, chain, levels, indexes)
    return {(r["level"], r["idx"]): bytes(r["hash"]) for r in rows}


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


async def checkpoint(
    conn: Conn,
    chain: int,
    keys: AuditKeys,
    *,
    role: str,
    now: datetime,
    log_name: str = LOG_NAME,
) -> bool:
    """Sign the chain's head unless the last checkpoint already covers it. A chain written
    before the tree existed gets its tree built first, whether or not it is signed."""
    async with conn.transaction():
        await _hold_chain(conn, chain, role)
        head_seq, head_hash = await head(conn, chain)
        frontier = await _frontier(conn, chain, head_seq)
        last = await last_checkpoint(conn, chain)
        if head_seq <= (last.seq if last else 0):
            return False
        root = merkle.fold(frontier)
        await _sign(conn, keys, chain, head_seq, head_hash, now, last, root, log_name)
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


def origin(log_name: str, chain: int) -> str:
    """A chain's checkpoint origin: the log's name and the chain."""
    return f"{log_name}/chain/{chain}"


def signed_at_line(moment: datetime) -> str:
    """The note's extension line naming when it was signed: UTC, to the microsecond."""
    return f"{SIGNED_AT} {moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def checkpoint_note(
    keys: AuditKeys, log_name: str, chain: int, seq: int, root: bytes, signed_at: datetime
) -> str:
    """The C2SP signed note of the chain's tree at `seq` leaves with `root`."""
    body = note.Checkpoint(origin(log_name, chain), seq, root, (signed_at_line(signed_at),))
    return note.sign(body, log_name, keys.signing_key)


async def _sign(
    conn: Conn,
    keys: AuditKeys,
    chain: int,
    seq: int,
    head_hash: bytes,
    now: datetime,
    last: Checkpoint | None,
    root: bytes,
    log_name: str,
) -> None:
    """Sign the chain's head twice over: the chained signature of (chain, seq, head hash,
    time, previous checkpoint), and the signed note of the tree's root that outsiders check."""
    prev = chains.checkpoint_digest(last.signature) if last else chains.GENESIS
    signature = chains.sign_checkpoint(keys.signing_key, chain, seq, head_hash, now, prev)
    signed_note = checkpoint_note(keys, log_name, chain, seq, root, now)
    await conn.execute(
        "INSERT INTO audit_checkpoints"
        " (chain, seq, hash, signed_at, signing_key_id, signature, prev_digest, root, note)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        chain,
        seq,
        head_hash,
        now,
        keys.signing_key_id,
        signature,
        prev,
        root,
        signed_note,
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
    conn: Conn, *, chunk: int = 5000, chains: Sequence[int] | None = None
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    """Every entry (of `chains`, when given) as a row of ENTRY_COLUMNS values, chain by
    chain in sequence order, `chunk` rows at a time (inside a transaction)."""
    if chains is None:
        cursor = await conn.cursor(f"{_SELECT_ENTRY} ORDER BY chain, seq")
    else:
        query = f"{_SELECT_ENTRY} WHERE chain = ANY($1::int[]) ORDER BY chain, seq"
        cursor = await conn.cursor(query, list(chains))
    while rows := await cursor.fetch(chunk):
        yield rows


# --- the tree and its checkpoints, for proofs -------------------------------------------


async def tree_size(conn: Conn, chain: int) -> int:
    """How many leaves the chain's stored tree has (its head seq, once the writer built it)."""
    size = await conn.fetchval(
        "SELECT idx + 1 FROM audit_tree WHERE chain = $1 AND level = 0 ORDER BY idx DESC LIMIT 1",
        chain,
    )
    return int(size or 0)


async def _hashes(
    conn: Conn, chain: int, size: int, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """The hashes of leaf ranges of the chain's tree of `size` leaves, from one indexed read
    of their stored nodes (with the tree's leaf size - 1, which says the tree is that big)."""
    if size > merkle.MAX_SIZE:
        raise ValueError(f"no tree of {size} leaves")
    per_range = [merkle.range_nodes(begin, end) for begin, end in ranges]
    last_leaf = (0, size - 1)
    found = await tree_nodes(conn, chain, [last_leaf, *(n for nodes in per_range for n in nodes)])
    if last_leaf not in found:
        raise ValueError(f"chain {chain}'s tree has fewer than {size} leaves")
    try:
        return [merkle.fold([found[n] for n in nodes]) for nodes in per_range]
    except KeyError as missing:
        raise TreeDamaged(
            f"chain {chain}: the tree lacks node {missing.args[0]} (level, index)"
        ) from None


async def inclusion_proof(conn: Conn, chain: int, seq: int, size: int) -> list[bytes]:
    """The RFC 9162 inclusion proof of entry `seq` in the chain's tree of `size` leaves
    (ValueError unless 1 <= seq <= size <= tree size)."""
    if not 1 <= seq <= size:
        raise ValueError(f"entry {chain}:{seq} is not in a tree of {size}")
    return await _hashes(conn, chain, size, merkle.inclusion_ranges(seq - 1, size))


async def consistency_proof(conn: Conn, chain: int, first: int, second: int) -> list[bytes]:
    """The RFC 9162 consistency proof from the chain's tree of `first` leaves to its tree
    of `second` (ValueError unless 1 <= first <= second <= tree size)."""
    if not 1 <= first <= second:
        raise ValueError(f"no consistency proof from {first} to {second} leaves")
    return await _hashes(conn, chain, second, merkle.consistency_ranges(first, second))


async def tree_root(conn: Conn, chain: int, size: int) -> bytes:
    """The root of the chain's tree of `size` leaves (ValueError unless 0 <= size <= tree
    size; the empty tree's root for 0)."""
    if size < 0:
        raise ValueError(f"no tree of {size} leaves")
    if size == 0:
        return merkle.EMPTY_ROOT
    return (await _hashes(conn, chain, size, [(0, size)]))[0]


async def latest_checkpoints(conn: Conn) -> list[Checkpoint]:
    """The newest checkpoint of each chain, by chain: a few index probes per chain (a skip
    scan over the primary key), however many checkpoints the years have piled up."""
    rows = await conn.fetch(
        "WITH RECURSIVE chains AS ("
        " (SELECT chain FROM audit_checkpoints ORDER BY chain LIMIT 1)"
        " UNION ALL SELECT (SELECT a.chain FROM audit_checkpoints AS a WHERE a.chain > c.chain"
        " ORDER BY a.chain LIMIT 1) FROM chains AS c WHERE c.chain IS NOT NULL)"
        " SELECT cp.* FROM chains, LATERAL (SELECT chain, seq, hash, signed_at, signing_key_id,"
        " signature, prev_digest, root, note FROM audit_checkpoints AS b"
        " WHERE b.chain = chains.chain ORDER BY b.seq DESC LIMIT 1) AS cp"
        " WHERE chains.chain IS NOT NULL ORDER BY cp.chain"
    )
    return [_checkpoint(r) for r in rows]


async def signed_note(conn: Conn, chain: int, size: int) -> str | None:
    """The signed note of the chain's checkpoint at exactly `size` entries, if any."""
    text = await conn.fetchval(
        "SELECT note FROM audit_checkpoints WHERE chain = $1 AND seq = $2", chain, size
    )
    return None if text is None else str(text)


async def signed_sizes(conn: Conn, chain: int, *, newest: int = 5) -> list[int]:
    """The sizes of the chain's newest checkpoints with a signed note, oldest first."""
    rows = await conn.fetch(
        "SELECT seq FROM (SELECT seq FROM audit_checkpoints WHERE chain = $1"
        " AND note IS NOT NULL ORDER BY seq DESC LIMIT $2) AS newest ORDER BY seq",
        chain,
        newest,
    )
    return [int(r["seq"]) for r in rows]


async def checkpoint_covering(conn: Conn, chain: int, seq: int) -> Checkpoint | None:
    """The chain's newest checkpoint with a signed note whose tree holds entry `seq`."""
    row = await conn.fetchrow(
        f"{_SELECT_CHECKPOINT} WHERE chain = $1 AND seq >= $2 AND note IS NOT NULL"
        " ORDER BY seq DESC LIMIT 1",
        chain,
        seq,
    )
    return None if row is None else _checkpoint(row)


async def tree_nodes_in_append_order(
    conn: Conn, chains: Sequence[int] | None = None
) -> asyncpg.cursor.Cursor[Any]:
    """A cursor over every stored tree node (of `chains`, when given) as (chain, position,
    level, hash) rows, in the order appending makes them: by chain, then the leaf whose
    append completed the node (position = ((idx + 1) << level) - 1), then level (inside a
    transaction)."""
    # Room to sort in memory: the nodes of a few million entries need no temporary files.
    await conn.execute("SET LOCAL work_mem = '128MB'")
    return await conn.cursor(
        "SELECT chain, ((idx + 1) << level) - 1 AS position, level, hash FROM audit_tree"
        " WHERE $1::int[] IS NULL OR chain = ANY($1::int[])"
        " ORDER BY chain, position, level",
        None if chains is None else list(chains),
    )


async def tree_node_digests(
    conn: Conn, block_bits: int, chains: Sequence[int] | None = None
) -> list[asyncpg.Record]:
    """Every chain's (or `chains`') stored tree nodes, level by level in blocks of
    2**block_bits by index, as (chain, level, block, nodes, first index, last index,
    digest) rows, the digest the SHA-256 of the block's hashes in index order; read in the
    primary key's order, so the sort is of rows already in order (inside a transaction)."""
    await conn.execute("SET LOCAL work_mem = '128MB'")
    return await conn.fetch(
        "SELECT chain, level, idx >> $1 AS block, count(*) AS nodes, min(idx), max(idx),"
        " sha256(string_agg(hash, ''::bytea ORDER BY idx)) AS digest FROM audit_tree"
        " WHERE $2::int[] IS NULL OR chain = ANY($2::int[])"
        " GROUP BY chain, level, block ORDER BY chain, level, block",
        block_bits,
        None if chains is None else list(chains),
    )


async def chain_sizes(conn: Conn) -> dict[int, int]:
    """Every chain the log holds (in its entries, its tree or its archives), with its last
    entry's seq (0 for a chain with no entry stored), each found by index (inside a
    transaction)."""
    rows = await conn.fetch(
        "WITH RECURSIVE entries AS ("
        " (SELECT chain FROM audit_entries ORDER BY chain LIMIT 1)"
        " UNION ALL SELECT (SELECT e.chain FROM audit_entries e WHERE e.chain > entries.chain"
        " ORDER BY e.chain LIMIT 1) FROM entries WHERE entries.chain IS NOT NULL),"
        " tree AS ("
        " (SELECT chain FROM audit_tree ORDER BY chain LIMIT 1)"
        " UNION ALL SELECT (SELECT t.chain FROM audit_tree t WHERE t.chain > tree.chain"
        " ORDER BY t.chain LIMIT 1) FROM tree WHERE tree.chain IS NOT NULL)"
        " SELECT chain, (SELECT max(seq) FROM audit_entries e WHERE e.chain = entries.chain)"
        " AS size FROM entries WHERE chain IS NOT NULL"
        " UNION SELECT chain, 0 FROM tree WHERE chain IS NOT NULL"
        " UNION SELECT chain, 0 FROM audit_archives"
    )
    sizes: dict[int, int] = {}
    for r in rows:
        sizes[r["chain"]] = max(sizes.get(r["chain"], 0), int(r["size"]))
    return sizes


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
        root=None if r["root"] is None else bytes(r["root"]),
        note=r["note"],
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
