"""The audit log's keys: AES-256-GCM record keys (by key id), the blind-index key and the
Ed25519 checkpoint signing key.

Each comes from the environment when set (CARECOORD_AUDIT_KEYS, CARECOORD_AUDIT_INDEX_KEY,
CARECOORD_AUDIT_SIGNING_KEY), else from a key file in the data directory that is
generated at first start: a DEVELOPMENT arrangement for one machine (the keys sit beside
the data they protect), said so in the log. `carecoord audit rotate-key` adds a record
key and makes it current; older keys stay, so older entries stay readable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.settings import Settings

KEY_FILE = "audit-keys.json"
KEY_BYTES = 32
# How often a long-running process looks at the key file for a rotation.
_RELOAD_SECONDS = 1.0


class BadKeys(ValueError):
    """The configured keys are unusable; the message says which and why, never the key."""


@dataclass(frozen=True)
class AuditKeys:
    # Record keys by id; `current` encrypts new records.
    records: dict[str, bytes]
    current: str
    index_key: bytes
    signing_key: Ed25519PrivateKey
    # Where each came from, for the log: "CARECOORD_AUDIT_KEYS" or "DEV key file <path>".
    source: str

    @property
    def verify_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @property
    def signing_key_id(self) -> str:
        return public_key_id(self.verify_key)


def public_key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadKeys(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadKeys("the public key is not an Ed25519 key")
    return key


def key_file(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def load(settings: Settings, *, create: bool = False) -> AuditKeys:
    """The keys, from the environment or the key file (generated when create is true)."""
    env = _from_env(settings)
    needs_file = any(v is None for v in env.values())
    stored: dict[str, Any] = {}
    path = key_file(settings)
    if needs_file:
        if not path.exists():
            if not create:
                raise BadKeys(
                    f"no audit keys: set CARECOORD_AUDIT_KEYS, CARECOORD_AUDIT_INDEX_KEY and "
                    f"CARECOORD_AUDIT_SIGNING_KEY, or run `carecoord up` once to generate "
                    f"development keys in {path}"
                )
            _create_file(path)
        stored = _read_file(path)
    if env["records"] is not None:
        records, current = env["records"]
    else:
        records = {k: _b64(v, f"{path} key {k}") for k, v in stored["records"].items()}
        current = str(stored["current"])
    index = env["index"] if env["index"] is not None else _stored(stored, "index_key", path)
    seed = env["signing"] if env["signing"] is not None else _stored(stored, "signing_key", path)
    if current not in records:
        raise BadKeys(f"the current record key {current!r} is not among the keys")
    for label, value in (("index key", index), ("signing key", seed), *records.items()):
        if len(value) != KEY_BYTES:
            raise BadKeys(f"audit {label} must be {KEY_BYTES} bytes, base64-encoded")
    source = "environment" if not needs_file else f"DEVELOPMENT key file {path}"
    return AuditKeys(
        records=dict(records),
        current=current,
        index_key=index,
        signing_key=Ed25519PrivateKey.from_private_bytes(seed),
        source=source,
    )


def rotate(settings: Settings) -> str:
    """Add a new record key to the key file and make it current; return its id."""
    if settings.audit_keys is not None:
        raise BadKeys(
            "record keys come from CARECOORD_AUDIT_KEYS: append a new 'id:base64key' entry "
            "there (the last one is current) and restart the services"
        )
    path = key_file(settings)
    if not path.exists():
        _create_file(path)
    stored = _read_file(path)
    key_id = f"k{len(stored['records']) + 1}-{secrets.token_hex(3)}"
    stored["records"][key_id] = _new_key()
    stored["current"] = key_id
    _write_file(path, stored)
    return key_id


class Keyring:
    """The keys for a long-running process, re-read (at most once a second) when the key
    file changes, so a rotation reaches writers and readers without a restart."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        self._settings = settings
        self._create = create
        self._lock = threading.Lock()
        self._keys: AuditKeys | None = None
        self._stamp: float | None = None
        self._checked = 0.0

    def get(self) -> AuditKeys:
        """The keys (read on first use, BadKeys if there are none usable)."""
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    self._stamp = self._file_stamp()
                    self._keys = load(self._settings, create=self._create)
                    self._checked = time.monotonic()
            assert self._keys is not None
            return self._keys
        now = time.monotonic()
        if now - self._checked >= _RELOAD_SECONDS:
            with self._lock:
                self._checked = now
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._keys, self._stamp = load(self._settings, create=self._create), stamp
        return self._keys

    def _file_stamp(self) -> float | None:
        try:
            return key_file(self._settings).stat().st_mtime
        except FileNotFoundError:
            return None


def _from_env(settings: Settings) -> dict[str, Any]:
    records: tuple[dict[str, bytes], str] | None = None
    if settings.audit_keys is not None:
        entries: dict[str, bytes] = {}
        current = ""
        for item in settings.audit_keys.get_secret_value().split(","):
            key_id, sep, value = item.strip().partition(":")
            if not sep or not key_id:
                raise BadKeys("CARECOORD_AUDIT_KEYS must be 'id:base64key,id:base64key,...'")
            entries[key_id] = _b64(value, f"CARECOORD_AUDIT_KEYS key {key_id}")
            current = key_id
        records = (entries, current)
    index = settings.audit_index_key
    signing = settings.audit_signing_key
    return {
        "records": records,
        "index": _b64(index.get_secret_value(), "CARECOORD_AUDIT_INDEX_KEY") if index else None,
        "signing": _b64(signing.get_secret_value(), "CARECOORD_AUDIT_SIGNING_KEY")
        if signing
        else None,
    }


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _create_file(path: Path) -> None:
    """Write fresh keys unless another process got there first: the file appears whole
    (written aside, then linked into place, which fails if it exists)."""
    body = {
        "warning": "DEVELOPMENT audit keys, generated on this machine; in production give "
        "CARECOORD_AUDIT_KEYS, CARECOORD_AUDIT_INDEX_KEY and CARECOORD_AUDIT_SIGNING_KEY "
        "from a secret store",
        "records": {"k1": _new_key()},
        "current": "k1",
        "index_key": _new_key(),
        "signing_key": _new_key(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _write_aside(path, body)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def _write_aside(path: Path, body: dict[str, Any]) -> Path:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2)
    return temp


def _write_file(path: Path, body: dict[str, Any]) -> None:
    _write_aside(path, body).replace(path)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
        if not isinstance(body.get("records"), dict) or "current" not in body:
            raise ValueError("missing 'records' or 'current'")
        return dict(body)
    except (OSError, ValueError) as exc:
        raise BadKeys(f"the audit key file {path} is unreadable: {exc}") from None


def _stored(stored: dict[str, Any], name: str, path: Path) -> bytes:
    if not isinstance(stored.get(name), str):
        raise BadKeys(f"the audit key file {path} has no {name}")
    return _b64(stored[name], f"{path} {name}")


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadKeys(f"{what} is not valid base64") from None
