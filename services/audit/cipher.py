"""Record encryption (AES-256-GCM, a fresh 96-bit nonce per record) and blind indexes
(HMAC-SHA-256 under the index key) for filtering without decrypting."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.audit.keys import AuditKeys, LogKeys

NONCE_BYTES = 12
INDEX_BYTES = 16
_AAD = b"carecoord-audit-record|"
# HMAC (RFC 2104) over SHA-256: the key, zero-padded to the block, XORed with these.
_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class Undecryptable(ValueError):
    """A ciphertext failed authentication, or its key id is unknown."""


@lru_cache(maxsize=64)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)


def place(chain: int, seq: int, record_id: str) -> bytes:
    """Where an entry sits, bound into its tag: moved or renumbered, it no longer opens."""
    return f"|{chain}|{seq}|{record_id}".encode()


def aad_prefix(key_id: str) -> bytes:
    """The associated data of every record under `key_id`, before the entry's place."""
    return _AAD + key_id.encode()


def encrypt(keys: AuditKeys, plaintext: bytes, *, at: bytes = b"") -> tuple[str, bytes]:
    """(key id, nonce + ciphertext + tag) under the current record key; `at` is the
    entry's place (see place())."""
    key_id, seal = encryptor(keys)
    return key_id, seal(os.urandom(NONCE_BYTES), plaintext, at)


def decrypt(keys: LogKeys, key_id: str, blob: bytes, *, at: bytes = b"") -> bytes:
    return opener(keys, key_id)(blob, at)


def opener(keys: LogKeys, key_id: str) -> Callable[[bytes, bytes], bytes]:
    """decrypt() for many entries under one key id: open(blob, at) -> plaintext, raising
    Undecryptable like decrypt() (when called, for an unknown key id too)."""
    key = keys.records.get(key_id)
    if key is None:

        def unknown(blob: bytes, at: bytes) -> bytes:
            raise Undecryptable(f"encrypted under key {key_id!r}, which is not among the keys")

        return unknown
    aead_decrypt = _aead(key).decrypt
    prefix = aad_prefix(key_id)

    def open_blob(blob: bytes, at: bytes) -> bytes:
        try:
            return aead_decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], prefix + at)
        except (InvalidTag, ValueError):
            raise Undecryptable("the ciphertext fails authentication (changed)") from None

    return open_blob


def blind(keys: LogKeys, kind: str, value: str) -> bytes:
    """The blind index of an id: equal ids give equal indexes, nothing else is revealed."""
    return blinder(keys.index_key, kind)(value)


def blinder(index_key: bytes, kind: str) -> Callable[[str], bytes]:
    """blind() for many ids of one kind: the HMAC key's padded blocks are hashed once,
    and each id costs two SHA-256 state copies (the same HMAC-SHA-256 as hmac.digest)."""
    inner, outer = _hmac_pads(index_key)
    start = inner.copy()
    start.update(f"{kind}\x00".encode())

    def index(value: str) -> bytes:
        h = start.copy()
        h.update(value.encode())
        o = outer.copy()
        o.update(h.digest())
        return o.digest()[:INDEX_BYTES]

    return index


@lru_cache(maxsize=16)
def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\x00")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def nonces(count: int) -> list[bytes]:
    """`count` fresh random nonces, drawn from the OS in one call."""
    pool = os.urandom(NONCE_BYTES * count)
    return [pool[i : i + NONCE_BYTES] for i in range(0, len(pool), NONCE_BYTES)]


def encryptor(keys: AuditKeys) -> tuple[str, Callable[[bytes, bytes, bytes], bytes]]:
    """(current key id, seal(nonce, plaintext, at) -> blob): encrypt() for many records,
    each with a nonce of its own from nonces()."""
    key_id = keys.current
    aead_encrypt = _aead(keys.records[key_id]).encrypt
    prefix = aad_prefix(key_id)

    def seal(nonce: bytes, plaintext: bytes, at: bytes) -> bytes:
        return nonce + aead_encrypt(nonce, plaintext, prefix + at)

    return key_id, seal
