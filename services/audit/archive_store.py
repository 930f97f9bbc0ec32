"""Archiving months of the audit log in PostgreSQL: reading a month's partition, the
tree nodes that prove its entries, recording the archive and detaching the partition.
Detaching needs the tables' owner: these run on the owner's connection, never the
services'. What a bundle holds and how it is checked is services/audit/archive.py."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from services.audit import archive, merkle, note, store
from services.audit.store import ENTRY_COLUMNS
from services.common.db import Conn


def partition_name(month: date) -> str:
    """The partition audit_ensure_partition makes for the month (see 0005)."""
    return f"audit_entries_y{month.year:04d}m{month.month:02d}"


def archived_name(month: date) -> str:
    return f"audit_archived_y{month.year:04d}m{month.month:02d}"


async def month_attached(conn: Conn, month: date) -> bool:
    row = await conn.fetchval(
        "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'audit_entries'::regclass AND c.relname = $1",
        partition_name(month),
    )
    return row is not None


async def month_rows(conn: Conn, month: date, *, chunk: int = 5000) -> AsyncIterator[Sequence[Any]]:
    """The month's entries (ENTRY_COLUMNS order), chain then seq, inside a transaction."""
    table = partition_name(month)  # made from two integers: nothing to inject
    sql = f'SELECT {", ".join(ENTRY_COLUMNS)} FROM "{table}" ORDER BY chain, seq'  # noqa: S608
    cursor = await conn.cursor(sql)
    while rows := await cursor.fetch(chunk):
        for row in rows:
            yield row


@dataclass(frozen=True)
class Recorded:
    chain: int
    seqs: list[tuple[int, int]]
    entries: int
    checkpoint_size: int
    checkpoint: str


async def record_and_detach(
    conn: Conn, month: date, parts: Sequence[Recorded], manifest_sha256: str, *, drop: bool
) -> None:
    """In one transaction: record what left, detach the month's partition and rename it
    (so an access of that month arriving late gets a new partition), or drop it."""
    table, kept = partition_name(month), archived_name(month)
    async with conn.transaction():  # a savepoint when the caller's transaction is open
        await conn.executemany(
            "INSERT INTO audit_archives (month, chain, first_seqs, last_seqs, entries,"
            " checkpoint_size, checkpoint, manifest_sha256)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (
                    month,
                    p.chain,
                    [a for a, _ in p.seqs],
                    [b for _, b in p.seqs],
                    p.entries,
                    p.checkpoint_size,
                    p.checkpoint,
                    manifest_sha256,
                )
                for p in parts
            ],
        )
        await conn.execute(f'ALTER TABLE audit_entries DETACH PARTITION "{table}"')
        if drop:
            await conn.execute(f'DROP TABLE "{table}"')
        else:
            await conn.execute(f'ALTER TABLE "{table}" RENAME TO "{kept}"')


async def archived_seqs(conn: Conn) -> dict[int, list[tuple[int, int]]]:
    """Per chain, the sequences that were archived (inclusive runs, sorted)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for r in await conn.fetch("SELECT chain, first_seqs, last_seqs FROM audit_archives"):
        out.setdefault(r["chain"], []).extend(zip(r["first_seqs"], r["last_seqs"], strict=True))
    return {c: sorted(runs) for c, runs in out.items()}


def month_of(text: str) -> date:
    """'YYYY-MM' as the first day of that month; ValueError otherwise."""
    parsed = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    return parsed.date()


class CannotArchive(ValueError):
    """The month cannot be archived (yet); the message says why."""


@dataclass(frozen=True)
class Archived:
    month: date
    entries: int
    chains: int
    folder: Path


async def archive_month(
    conn: Conn,
    month: date,
    folder: Path,
    verifier: note.Verifier,
    *,
    now: datetime,
    grace: timedelta,
    drop: bool = False,
) -> Archived:
    """Export the month's entries with their proofs into `folder` (made here, 0700, files
    0600), check the bundle as an outside party would, then record it and detach the
    month. Nothing is detached unless the written bundle verifies."""
    end = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    if datetime(end.year, end.month, end.day, tzinfo=UTC) + grace > now:
        raise CannotArchive(
            f"{month:%Y-%m} ended less than {grace.days} day(s) ago: late access records may "
            "still arrive for it"
        )
    if not await month_attached(conn, month):
        raise CannotArchive(f"the audit log holds no partition for {month:%Y-%m}")
    table = partition_name(month)
    # One transaction from the first read to the detach: the month's partition is locked
    # against new entries (a late access record waits), so what is exported is exactly
    # what leaves.
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute(f'LOCK TABLE "{table}" IN SHARE MODE')
        heads = await conn.fetch(
            f'SELECT chain, max(seq) AS last FROM "{table}" GROUP BY chain ORDER BY chain'  # noqa: S608
        )
        signed: dict[int, store.Checkpoint] = {}
        for r in heads:
            cp = await store.checkpoint_covering(conn, r["chain"], r["last"])
            if cp is None or cp.note is None:
                raise CannotArchive(
                    f"chain {r['chain']} has no signed checkpoint covering "
                    f"{r['chain']}:{r['last']} yet; try again once the writer has signed one"
                )
            signed[r["chain"]] = cp
        os.mkdir(folder, 0o700)  # a one-shot command: blocking file work is fine here
        try:
            archived = await _export(conn, month, folder, verifier, signed)
            await record_and_detach(conn, month, archived.recorded, archived.sha256, drop=drop)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return Archived(month, archived.entries, len(archived.recorded), folder)


@dataclass(frozen=True)
class _Exported:
    recorded: list[Recorded]
    entries: int
    sha256: str


async def _export(
    conn: Conn,
    month: date,
    folder: Path,
    verifier: note.Verifier,
    signed: dict[int, store.Checkpoint],
) -> _Exported:
    """Write the bundle and check it as an outside party would; what to record."""
    entries_path, manifest_path = folder / archive.ENTRIES, folder / archive.MANIFEST
    digest = hashlib.sha256()
    seqs: dict[int, list[int]] = {}
    with _private(entries_path) as out:
        async for row in month_rows(conn, month):
            line = archive.entry_line(row)
            digest.update(line)
            out.write(line)
            seqs.setdefault(row[1], []).append(row[2])
    parts: list[archive.ChainPart] = []
    for chain, chain_seqs in sorted(seqs.items()):
        cp = signed[chain]
        assert cp.note is not None
        needed = merkle.cover(cp.seq, [s - 1 for s in chain_seqs])
        nodes = await store.tree_nodes(conn, chain, needed)
        if len(nodes) != len(needed):
            raise CannotArchive(f"chain {chain}: tree nodes are missing; run audit verify")
        cover = [(lvl, idx, nodes[(lvl, idx)]) for lvl, idx in needed]
        parts.append(archive.ChainPart(chain, archive.ranges(chain_seqs), cp.note, cover))
    manifest = archive.manifest(f"{month:%Y-%m}", verifier.name, digest.hexdigest(), parts)
    with _private(manifest_path) as out:
        out.write(manifest)
    with open(entries_path, "rb") as lines:  # noqa: ASYNC230 - a one-shot command
        try:
            checked = archive.check(manifest, lines, verifier)
        except archive.BadArchive as exc:
            raise CannotArchive(
                f"the bundle does not verify, so nothing was detached: {exc}"
            ) from exc
    recorded = [
        Recorded(
            p.chain, p.seqs, sum(b - a + 1 for a, b in p.seqs), checked.sizes[p.chain], p.checkpoint
        )
        for p in parts
    ]
    return _Exported(recorded, checked.entries, hashlib.sha256(manifest).hexdigest())


@contextlib.contextmanager
def _private(path: Path) -> Iterator[BinaryIO]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        yield out


async def with_archived(
    conn: Conn,
    chunks: AsyncIterator[Sequence[Sequence[Any]]],
    archived: dict[int, list[tuple[int, int]]],
    *,
    chunk: int = 5000,
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    """Entry rows (chain, seq order, in chunks) with the archived entries put back in their
    place as rows whose access time is None and whose hash column holds the leaf hash the
    tree keeps for them (what verify.Verifier takes for an archived entry)."""
    runs = sorted((c, a, b) for c, rs in archived.items() for a, b in rs)
    i = 0

    async def ghosts(chain: int, first: int, last: int) -> AsyncIterator[list[Sequence[Any]]]:
        for start in range(first, last + 1, chunk):
            rows = await conn.fetch(
                "SELECT idx, hash FROM audit_tree WHERE chain = $1 AND level = 0"
                " AND idx BETWEEN $2 AND $3 ORDER BY idx",
                chain,
                start - 1,
                min(last, start + chunk - 1) - 1,
            )
            pad = (None,) * (len(ENTRY_COLUMNS) - 8)
            yield [
                (None, chain, r["idx"] + 1, None, None, None, None, bytes(r["hash"]), *pad)
                for r in rows
            ]

    async for rows in chunks:
        out: list[Sequence[Any]] = []
        for row in rows:
            while i < len(runs) and (runs[i][0], runs[i][1]) < (row[1], row[2]):
                async for part in ghosts(*runs[i]):
                    out.extend(part)
                i += 1
            out.append(row)
        yield out
    for run in runs[i:]:
        async for part in ghosts(*run):
            yield part
