"""A chain's Merkle tree kept in memory as the store keeps it, with checkpoints signed as
C2SP notes over its roots: proofs and witnesses are tested against it without a database."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import merkle, note, proofs
from services.audit.note import Checkpoint
from services.audit.proofs import ConsistencyProof, InclusionProof

NAME = "carecoord.example/audit"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
VKEY = note.vkey(NAME, KEY.public_key())
AT = "carecoord-signed-at 2026-01-01T00:00:00.000000Z"


class Chain:
    """A chain's tree kept as the store keeps it, and notes signed over its roots."""

    def __init__(self, chain: int, entries: int, seed: str = "") -> None:
        self.chain = chain
        self.hashes = [
            hashlib.sha256(f"{seed}{chain}:{i}".encode()).digest() for i in range(entries)
        ]
        self.nodes = {(lvl, idx): h for lvl, idx, h in merkle.new_nodes(0, (), self.hashes)}

    def _hash(self, begin: int, end: int) -> bytes:
        return merkle.fold([self.nodes[n] for n in merkle.range_nodes(begin, end)])

    def note(self, size: int, key: Ed25519PrivateKey = KEY, chain: int | None = None) -> str:
        origin = proofs.origin(NAME, self.chain if chain is None else chain)
        return note.sign(Checkpoint(origin, size, self._hash(0, size), (AT,)), NAME, key)

    def inclusion(self, seq: int, size: int) -> InclusionProof:
        path = tuple(self._hash(b, e) for b, e in merkle.inclusion_ranges(seq - 1, size))
        return InclusionProof(self.chain, seq, size, self.hashes[seq - 1], path, self.note(size))

    def consistency(self, first: int, second: int, *, with_first: bool = True) -> ConsistencyProof:
        path = tuple(self._hash(b, e) for b, e in merkle.consistency_ranges(first, second))
        kept = self.note(first) if with_first else None
        return ConsistencyProof(self.chain, first, second, path, self.note(second), kept)
