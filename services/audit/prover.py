"""Proofs from the audit log's database, for the API and `carecoord audit prove`: an entry's
inclusion and a chain's consistency, each against sizes the writer signed a note for, so
whoever checks one always has a signed root to check it against.

Read in one read-only snapshot, so a proof and its notes describe one tree. Bad requests
are InvalidInput (BAD_USER_INPUT in the API) naming what is allowed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import asyncpg

from services.audit import store
from services.audit.proofs import ConsistencyProof, InclusionProof
from services.common.db import Conn
from services.common.errors import InvalidInput, StateConflict


class Prover:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def inclusion(self, chain: int, seq: int, size: int | None) -> InclusionProof:
        """Entry chain:seq in the tree of `size` (default: the newest signed one covering it)."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await _inclusion(conn, chain, seq, size)

    async def consistency(self, chain: int, first: int, second: int | None) -> ConsistencyProof:
        """The chain's tree of `second` (default: the newest signed) extends that of `first`."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await _consistency(conn, chain, first, second)

    async def notes(self) -> list[str]:
        """The newest signed note of every chain, by chain."""
        async with self._pool.acquire() as conn:
            newest = await store.latest_checkpoints(conn)
        return [c.note for c in sorted(newest, key=lambda c: c.chain) if c.note is not None]


async def _inclusion(conn: Conn, chain: int, seq: int, size: int | None) -> InclusionProof:
    entry = await store.entry(conn, chain, seq)
    if entry is None:
        top = await store.tree_size(conn, chain)
        raise InvalidInput(
            f"Audit entry {chain}:{seq} does not exist: chain {chain} has entries 1 to {top}."
            if top
            else f"Audit chain {chain} has no entries."
        )
    if size is None:
        covering = await store.checkpoint_covering(conn, chain, seq)
        if covering is None or covering.note is None:
            raise InvalidInput(
                f"No signed checkpoint covers audit entry {chain}:{seq} yet; the writer signs "
                "one within seconds: ask again shortly."
            )
        size, text = covering.seq, covering.note
    else:
        if size < seq:
            raise InvalidInput(f"treeSize must be at least {seq} to hold entry {chain}:{seq}.")
        text = await _note_at(conn, chain, size)
    path = await _proved(chain, store.inclusion_proof(conn, chain, seq, size))
    return InclusionProof(
        chain=chain,
        seq=seq,
        tree_size=size,
        entry_hash=entry.hash,
        path=tuple(path),
        checkpoint=text,
    )


async def _consistency(conn: Conn, chain: int, first: int, second: int | None) -> ConsistencyProof:
    if second is None:
        newest = await store.checkpoint_covering(conn, chain, 1)
        if newest is None or newest.note is None:
            raise InvalidInput(f"Audit chain {chain} has no signed checkpoint.")
        second, to_note = newest.seq, newest.note
    else:
        to_note = await _note_at(conn, chain, second)
    if not 1 <= first <= second:
        raise InvalidInput(f"fromSize must be between 1 and toSize ({second}).")
    path = await _proved(chain, store.consistency_proof(conn, chain, first, second))
    return ConsistencyProof(
        chain=chain,
        from_size=first,
        to_size=second,
        path=tuple(path),
        to_checkpoint=to_note,
        from_checkpoint=await store.signed_note(conn, chain, first),
    )


async def _proved(chain: int, proving: Awaitable[list[bytes]]) -> list[bytes]:
    """The proof; a tree that cannot give one for a size a checkpoint was signed at was
    tampered with (verification names how)."""
    try:
        return await proving
    except (ValueError, store.TreeDamaged) as exc:
        raise StateConflict(
            f"Audit chain {chain} cannot be proved ({exc}): its tree was changed. Run "
            "verifyAuditLog (or `carecoord audit verify`)."
        ) from None


async def _note_at(conn: Conn, chain: int, size: int) -> str:
    text = await store.signed_note(conn, chain, size)
    if text is None:
        sizes = await store.signed_sizes(conn, chain)
        shown = ", ".join(str(s) for s in sizes[-5:])
        raise InvalidInput(
            f"Audit chain {chain} has no signed checkpoint of {size} entries; proofs are given "
            f"against signed sizes only (the newest: {shown})."
            if sizes
            else f"Audit chain {chain} has no signed checkpoint."
        )
    return text
