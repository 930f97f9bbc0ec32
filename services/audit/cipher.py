"""Record encryption (AES-256-GCM, a fresh 96-bit nonce per record) and blind indexes
(HMAC-SHA-256 under the index key) for filtering without decrypting."""

from __future__ import annotations

import hmac
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.audit.keys import AuditKeys

NONCE_BYTES = 12
INDEX_BYTES = 16
_AAD = b"carecoord-audit-record|"


class Undecryptable(ValueError):
    """A ciphertext failed authentication, or its key id is unknown."""


@lru_cache(maxsize=64)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)


def place(chain: int, seq: int, record_id: str) -> bytes:
    """Where an entry sits, bound into its tag: moved or renumbered, it no longer opens."""
    return f"|{chain}|{seq}|{record_id}".encode()


def encrypt(keys: AuditKeys, plaintext: bytes, *, at: bytes = b"") -> tuple[str, bytes]:
    """(key id, nonce + ciphertext + tag) under the current record key; `at` is the
    entry's place (see place())."""
    key_id = keys.current
    nonce = os.urandom(NONCE_BYTES)
    sealed = _aead(keys.records[key_id]).encrypt(nonce, plaintext, _AAD + key_id.encode() + at)
    return key_id, nonce + sealed


def decrypt(keys: AuditKeys, key_id: str, blob: bytes, *, at: bytes = b"") -> bytes:
    key = keys.records.get(key_id)
    if key is None:
        raise Undecryptable(f"encrypted under key {key_id!r}, which is not among the keys")
    try:
        return _aead(key).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _AAD + key_id.encode() + at
        )
    except (InvalidTag, ValueError):
        raise Undecryptable("the ciphertext fails authentication (changed)") from None


def blind(keys: AuditKeys, kind: str, value: str) -> bytes:
    """The blind index of an id: equal ids give equal indexes, nothing else is revealed."""
    return hmac.digest(keys.index_key, f"{kind}\x00{value}".encode(), "sha256")[:INDEX_BYTES]
