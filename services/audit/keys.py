"""The audit log's keys: AES-256-GCM record keys (by key id), the blind-index key and the
Ed25519 checkpoint signing key.

Each comes from the environment when set (CARECOORD_AUDIT_KEYS, CARECOORD_AUDIT_INDEX_KEY,
CARECOORD_AUDIT_SIGNING_KEY, CARECOORD_AUDIT_PUBLIC_KEY), else from key files in the data
directory generated at first start: a DEVELOPMENT arrangement for one machine (the keys
sit beside the data they protect), said so in the log. Only the audit writer loads the
signing key (`load`, `Keyring`); the API reads and verifies with the public key alone
(`load_reader`, `ReaderKeyring`), and the signing key has a file of its own so that the
API never reads it. `carecoord audit rotate-key` adds a record key and makes it current;
older keys stay, so older entries stay readable.
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
from typing import Any, Generic, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.settings import Settings

KEY_FILE = "audit-keys.json"
SIGNING_KEY_FILE = "audit-signing-key"
KEY_BYTES = 32
# How often a long-running process looks at the key file for a rotation.
_RELOAD_SECONDS = 1.0


K = TypeVar("K", bound="LogKeys")


class BadKeys(ValueError):
    """The configured keys are unusable; the message says which and why, never the key."""


@dataclass(frozen=True)
class LogKeys:
    """What reading and verifying the log needs: the record keys, the blind-index key and
    the checkpoints' public key (`verify_key`). Readers take this; only the writer's
    AuditKeys can sign."""

    # Record keys by id; `current` encrypts new records.
    records: dict[str, bytes]
    current: str
    index_key: bytes
    # Where each came from, for the log: "environment" or "DEVELOPMENT key file <path>".
    source: str

    @property
    def verify_key(self) -> Ed25519PublicKey:
        raise NotImplementedError

    @property
    def signing_key_id(self) -> str:
        return public_key_id(self.verify_key)


@dataclass(frozen=True)
class ReaderKeys(LogKeys):
    """The API's keys: no signing key, only its public half (CARECOORD_AUDIT_PUBLIC_KEY)."""

    public_key: Ed25519PublicKey

    @property
    def verify_key(self) -> Ed25519PublicKey:
        return self.public_key


@dataclass(frozen=True)
class AuditKeys(LogKeys):
    """The audit writer's keys: the readers' and the Ed25519 checkpoint signing key."""

    signing_key: Ed25519PrivateKey

    @property
    def verify_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()


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


def signing_key_file(settings: Settings) -> Path:
    """The DEV signing key, apart from the other keys: the API reads the key file and
    never this one."""
    return settings.data_dir / SIGNING_KEY_FILE


def load(settings: Settings, *, create: bool = False) -> AuditKeys:
    """The audit writer's keys, signing key included, from the environment or the key
    files (generated when create is true; an older key file holding the signing key is
    then split in two)."""
    records, current, index, source = _log_keys(settings, create=create)
    path = key_file(settings)
    if settings.audit_signing_key is not None:
        seed = _b64(settings.audit_signing_key.get_secret_value(), "CARECOORD_AUDIT_SIGNING_KEY")
    else:
        seed = _stored_seed(settings, create=create)
    if len(seed) != KEY_BYTES:
        raise BadKeys(f"audit signing key must be {KEY_BYTES} bytes, base64-encoded")
    keys = AuditKeys(
        records=records,
        current=current,
        index_key=index,
        signing_key=Ed25519PrivateKey.from_private_bytes(seed),
        source=source if settings.audit_signing_key is not None else f"DEVELOPMENT key file {path}",
    )
    given = _given_public_key(settings)
    if given is not None and public_key_id(given) != keys.signing_key_id:
        raise BadKeys(
            "CARECOORD_AUDIT_PUBLIC_KEY is not the public half of CARECOORD_AUDIT_SIGNING_KEY"
        )
    return keys


def load_reader(settings: Settings) -> ReaderKeys:
    """The keys to read and verify the log, without the signing key: neither
    CARECOORD_AUDIT_SIGNING_KEY nor the signing key file is looked at. The public key
    comes from CARECOORD_AUDIT_PUBLIC_KEY, else from the DEV key file."""
    records, current, index, source = _log_keys(settings, create=False)
    public = _given_public_key(settings)
    if public is None:
        path = key_file(settings)
        if not path.exists():
            raise BadKeys(
                "no audit public key: set CARECOORD_AUDIT_PUBLIC_KEY (`carecoord audit "
                "public-key` prints it where the signing key is)"
            )
        stored = _read_file(path)
        if "public_key" not in stored:
            raise BadKeys(
                f"the audit key file {path} predates the split signing key: run "
                "`carecoord up` once, or set CARECOORD_AUDIT_PUBLIC_KEY"
            )
        public = _raw_public_key(_stored(stored, "public_key", path), f"{path} public_key")
        source = f"DEVELOPMENT key file {path}" if source == "environment" else source
    return ReaderKeys(
        records=records, current=current, index_key=index, public_key=public, source=source
    )


def load_public(settings: Settings) -> Ed25519PublicKey:
    """The checkpoints' public key: CARECOORD_AUDIT_PUBLIC_KEY, else the public half of
    the signing key where it is (the worker, or a development data directory)."""
    given = _given_public_key(settings)
    if given is not None:
        return given
    if settings.audit_signing_key is None and key_file(settings).exists():
        stored = _read_file(key_file(settings))
        if "public_key" in stored:
            return _raw_public_key(
                _stored(stored, "public_key", key_file(settings)), "the key file's public_key"
            )
    return load(settings).verify_key


def _log_keys(settings: Settings, *, create: bool) -> tuple[dict[str, bytes], str, bytes, str]:
    """The record keys, the current id, the index key and where they came from."""
    env = _from_env(settings)
    needs_file = env["records"] is None or env["index"] is None
    stored: dict[str, Any] = {}
    path = key_file(settings)
    if needs_file:
        if not path.exists():
            if not create:
                raise BadKeys(
                    f"no audit keys: set CARECOORD_AUDIT_KEYS, CARECOORD_AUDIT_INDEX_KEY and "
                    f"CARECOORD_AUDIT_SIGNING_KEY (the worker) or CARECOORD_AUDIT_PUBLIC_KEY "
                    f"(the API), or run `carecoord up` once to generate development keys "
                    f"in {path}"
                )
            _create_file(settings)
        stored = _read_file(path)
    elif create and not path.exists() and settings.audit_signing_key is None:
        _create_file(settings)
    if create and path.exists():
        _split_signing_key(settings)
    if env["records"] is not None:
        records, current = env["records"]
    else:
        records = {k: _b64(v, f"{path} key {k}") for k, v in stored["records"].items()}
        current = str(stored["current"])
    index = env["index"] if env["index"] is not None else _stored(stored, "index_key", path)
    if current not in records:
        raise BadKeys(f"the current record key {current!r} is not among the keys")
    for label, value in (("index key", index), *records.items()):
        if len(value) != KEY_BYTES:
            raise BadKeys(f"audit {label} must be {KEY_BYTES} bytes, base64-encoded")
    source = "environment" if not needs_file else f"DEVELOPMENT key file {path}"
    return dict(records), current, index, source


def _given_public_key(settings: Settings) -> Ed25519PublicKey | None:
    if settings.audit_public_key is None:
        return None
    value = settings.audit_public_key.strip()
    if value.startswith("-----BEGIN"):
        return load_public_key(value.encode())
    return _raw_public_key(_b64(value, "CARECOORD_AUDIT_PUBLIC_KEY"), "CARECOORD_AUDIT_PUBLIC_KEY")


def _raw_public_key(raw: bytes, what: str) -> Ed25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise BadKeys(f"{what} must be a {KEY_BYTES}-byte Ed25519 public key (base64) or PEM")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The raw public key in base64, as CARECOORD_AUDIT_PUBLIC_KEY takes it."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _stored_seed(settings: Settings, *, create: bool) -> bytes:
    path = signing_key_file(settings)
    if path.exists():
        return _b64(path.read_text(), str(path))
    # A key file of an older version keeps the signing key inside; `carecoord up` splits it.
    legacy = key_file(settings)
    if legacy.exists():
        stored = _read_file(legacy)
        if isinstance(stored.get("signing_key"), str):
            return _stored(stored, "signing_key", legacy)
    if create:
        _link_new(path, _new_key() + "\n")
        return _b64(path.read_text(), str(path))
    raise BadKeys(
        f"no audit signing key: set CARECOORD_AUDIT_SIGNING_KEY, or run `carecoord up` once "
        f"to generate a development key in {path}"
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
        _create_file(settings)
    stored = _read_file(path)
    key_id = f"k{len(stored['records']) + 1}-{secrets.token_hex(3)}"
    stored["records"][key_id] = _new_key()
    stored["current"] = key_id
    _write_file(path, stored)
    return key_id


class _Ring(Generic[K]):
    """Keys for a long-running process, re-read (at most once a second) when the key file
    changes, so a rotation reaches writers and readers without a restart."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        self._settings = settings
        self._create = create
        self._lock = threading.Lock()
        self._keys: K | None = None
        self._stamp: float | None = None
        self._checked = 0.0

    def _load(self) -> K:
        raise NotImplementedError

    def get(self) -> K:
        """The keys (read on first use, BadKeys if there are none usable)."""
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    self._stamp = self._file_stamp()
                    self._keys = self._load()
                    self._checked = time.monotonic()
            assert self._keys is not None
            return self._keys
        now = time.monotonic()
        if now - self._checked >= _RELOAD_SECONDS:
            with self._lock:
                self._checked = now
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._keys, self._stamp = self._load(), stamp
        return self._keys

    def _file_stamp(self) -> float | None:
        try:
            return key_file(self._settings).stat().st_mtime
        except FileNotFoundError:
            return None


class Keyring(_Ring[AuditKeys]):
    """The audit writer's keys, signing key included."""

    def _load(self) -> AuditKeys:
        return load(self._settings, create=self._create)


class ReaderKeyring(_Ring[ReaderKeys]):
    """The API's keys: it reads and verifies the log, and never holds the signing key."""

    def _load(self) -> ReaderKeys:
        return load_reader(self._settings)


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
    return {
        "records": records,
        "index": _b64(index.get_secret_value(), "CARECOORD_AUDIT_INDEX_KEY") if index else None,
    }


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _create_file(settings: Settings) -> None:
    """Write fresh keys unless another process got there first: each file appears whole
    (written aside, then linked into place, which fails if it exists). The signing key
    has a file of its own; the key file carries its public half."""
    path = key_file(settings)
    seed_file = signing_key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not seed_file.exists() and settings.audit_signing_key is None:
        _link_new(seed_file, _new_key() + "\n")
    if settings.audit_signing_key is not None:
        seed = _b64(settings.audit_signing_key.get_secret_value(), "CARECOORD_AUDIT_SIGNING_KEY")
    else:
        seed = _b64(seed_file.read_text(), str(seed_file))
    body = {
        "warning": "DEVELOPMENT audit keys, generated on this machine; in production give "
        "CARECOORD_AUDIT_KEYS, CARECOORD_AUDIT_INDEX_KEY and CARECOORD_AUDIT_PUBLIC_KEY (the "
        "API) or CARECOORD_AUDIT_SIGNING_KEY (the audit writer) from a secret store",
        "records": {"k1": _new_key()},
        "current": "k1",
        "index_key": _new_key(),
        "public_key": public_key_b64(Ed25519PrivateKey.from_private_bytes(seed).public_key()),
    }
    temp = _write_aside(path, body)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()


def _split_signing_key(settings: Settings) -> None:
    """Move the signing key of an older key file into a file of its own, leaving its
    public half in the key file the API reads."""
    path = key_file(settings)
    stored = _read_file(path)
    if not isinstance(stored.get("signing_key"), str):
        return
    seed = _stored(stored, "signing_key", path)
    seed_file = signing_key_file(settings)
    if not seed_file.exists():
        _link_new(seed_file, base64.b64encode(seed).decode() + "\n")
    del stored["signing_key"]
    stored["public_key"] = public_key_b64(Ed25519PrivateKey.from_private_bytes(seed).public_key())
    _write_file(path, stored)


def _link_new(path: Path, text: str) -> None:
    """Create `path` (0600) with `text`, unless it exists."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
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
