"""The hash chain and its signed checkpoints: pure functions over bytes."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The previous hash of each chain's first entry.
GENESIS = bytes(32)
_ENTRY = b"carecoord-audit-entry|v1|"
_CHECKPOINT = b"carecoord-audit-checkpoint|v1|"
_HEAD = struct.Struct(">iqH")


def entry_hash(chain: int, seq: int, prev_hash: bytes, key_id: str, ciphertext: bytes) -> bytes:
    """SHA-256 over the chain, sequence, previous hash, key id and ciphertext, each framed
    so no two different entries give the same input."""
    kid = key_id.encode()
    return hashlib.sha256(
        b"".join((_ENTRY, _HEAD.pack(chain, seq, len(kid)), kid, prev_hash, ciphertext))
    ).digest()


def checkpoint_message(
    chain: int, seq: int, head_hash: bytes, signed_at: datetime, prev: bytes = GENESIS
) -> bytes:
    """What a checkpoint signs: the chain head, when, and the digest of the chain's
    previous checkpoint (so a removed checkpoint breaks the next one's signature).
    The time is taken in UTC to the microsecond, as PostgreSQL gives it back."""
    stamp = signed_at.astimezone(UTC).isoformat(timespec="microseconds").encode()
    return _CHECKPOINT + struct.pack(">iq", chain, seq) + head_hash + prev + b"|" + stamp


def checkpoint_digest(signature: bytes) -> bytes:
    """What the next checkpoint of the chain names as its previous one."""
    return hashlib.sha256(signature).digest()


def sign_checkpoint(
    key: Ed25519PrivateKey,
    chain: int,
    seq: int,
    head_hash: bytes,
    signed_at: datetime,
    prev: bytes = GENESIS,
) -> bytes:
    return key.sign(checkpoint_message(chain, seq, head_hash, signed_at, prev))


def checkpoint_signed(
    key: Ed25519PublicKey,
    chain: int,
    seq: int,
    head_hash: bytes,
    signed_at: datetime,
    signature: bytes,
    prev: bytes = GENESIS,
) -> bool:
    try:
        key.verify(signature, checkpoint_message(chain, seq, head_hash, signed_at, prev))
    except InvalidSignature:
        return False
    return True
