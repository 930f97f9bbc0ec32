"""The audit keys: a development key file generated once, keys from the environment that
win over it, rotation, a keyring that notices a rotation, and public key helpers."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from services.audit import cipher, keys
from services.audit.keys import AuditKeys, BadKeys
from services.settings import Settings

ENV_NAMES = (
    "CARECOORD_AUDIT_KEYS",
    "CARECOORD_AUDIT_INDEX_KEY",
    "CARECOORD_AUDIT_SIGNING_KEY",
    "CARECOORD_AUDIT_PUBLIC_KEY",
)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def settings(data_dir: Path, **secrets_: str) -> Settings:
    given: dict[str, Any] = {name: SecretStr(value) for name, value in secrets_.items()}
    return Settings(data_dir=data_dir, _env_file=None, **given)  # type: ignore[call-arg]


def make_keys(data_dir: Path) -> AuditKeys:
    return keys.load(settings(data_dir), create=True)


def new_key(size: int = keys.KEY_BYTES) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def env_keys(data_dir: Path, records: str, signing: str | None = None) -> Settings:
    signing = signing or new_key()
    return settings(
        data_dir, audit_keys=records, audit_index_key=new_key(), audit_signing_key=signing
    )


# --- the development key file ---------------------------------------------------------


def test_a_generated_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    make_keys(tmp_path)

    mode = stat.S_IMODE(keys.key_file(settings(tmp_path)).stat().st_mode)
    assert mode == 0o600


def test_a_generated_key_file_gives_the_same_keys_every_load(tmp_path: Path) -> None:
    first, again = make_keys(tmp_path), keys.load(settings(tmp_path))

    assert (again.records, again.current) == (first.records, first.current)
    assert (again.index_key, again.signing_key_id) == (first.index_key, first.signing_key_id)


def test_generated_keys_are_full_length_and_distinct(tmp_path: Path) -> None:
    loaded = make_keys(tmp_path)

    assert {len(loaded.records[loaded.current]), len(loaded.index_key)} == {keys.KEY_BYTES}
    assert loaded.records[loaded.current] != loaded.index_key
    assert make_keys(tmp_path / "elsewhere").index_key != loaded.index_key


def test_keys_from_the_file_say_they_are_for_development(tmp_path: Path) -> None:
    source = make_keys(tmp_path).source

    assert "DEVELOPMENT" in source
    assert str(keys.key_file(settings(tmp_path))) in source


def test_loading_without_a_key_file_or_environment_names_the_variables(tmp_path: Path) -> None:
    with pytest.raises(BadKeys) as caught:
        keys.load(settings(tmp_path))

    for name in ENV_NAMES:
        assert name in str(caught.value)
    assert not keys.key_file(settings(tmp_path)).exists()


def test_an_unreadable_key_file_is_bad_keys(tmp_path: Path) -> None:
    keys.key_file(settings(tmp_path)).write_text("{not json")

    with pytest.raises(BadKeys, match="unreadable"):
        keys.load(settings(tmp_path))


# --- keys from the environment --------------------------------------------------------


def test_keys_from_the_environment_win_over_the_key_file(tmp_path: Path) -> None:
    from_file = make_keys(tmp_path)
    record_key, seed = new_key(), secrets.token_bytes(32)

    loaded = keys.load(env_keys(tmp_path, f"env1:{record_key}", base64.b64encode(seed).decode()))

    assert loaded.source == "environment"
    assert loaded.records == {"env1": base64.b64decode(record_key)}
    assert loaded.index_key != from_file.index_key
    seeded = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert loaded.signing_key_id == keys.public_key_id(seeded)


def test_keys_from_the_environment_need_no_key_file(tmp_path: Path) -> None:
    loaded = keys.load(env_keys(tmp_path, f"a:{new_key()}"), create=True)

    assert loaded.source == "environment"
    assert not keys.key_file(settings(tmp_path)).exists()


def test_the_last_listed_record_key_is_current(tmp_path: Path) -> None:
    loaded = keys.load(env_keys(tmp_path, f"old:{new_key()}, mid:{new_key()} ,new:{new_key()}"))

    assert loaded.current == "new"
    assert set(loaded.records) == {"old", "mid", "new"}


SECRET, SHORT, LONG = new_key(), new_key(16), new_key(33)
# CARECOORD_AUDIT_KEYS, and the key material in it that the message must not repeat.
BAD_RECORD_KEYS = {
    "no_colon": (SECRET, SECRET),
    "no_id": (f":{SECRET}", SECRET),
    "bad_base64": (f"k1:{SECRET}*", SECRET),
    "short": (f"k1:{SHORT}", SHORT),
    "long": (f"k1:{LONG}", LONG),
    "empty_key": ("k1:", None),
    "trailing_comma": (f"k1:{SECRET},", SECRET),
}


@pytest.mark.parametrize(
    ("records", "secret"), BAD_RECORD_KEYS.values(), ids=BAD_RECORD_KEYS.keys()
)
def test_malformed_record_keys_are_bad_keys_without_the_key(
    tmp_path: Path, records: str, secret: str | None
) -> None:
    with pytest.raises(BadKeys) as caught:
        keys.load(env_keys(tmp_path, records))

    message = str(caught.value)
    assert "CARECOORD_AUDIT_KEYS" in message or "32 bytes" in message
    if secret is not None:
        assert secret not in message
        assert secret.rstrip("=")[:12] not in message


@pytest.mark.parametrize("setting", ["audit_index_key", "audit_signing_key"])
@pytest.mark.parametrize("value", ["%%%%", new_key(31), new_key(64)], ids=["base64", "31", "64"])
def test_a_malformed_index_or_signing_key_is_bad_keys_without_the_key(
    tmp_path: Path, setting: str, value: str
) -> None:
    given = {"audit_keys": f"k1:{new_key()}", "audit_index_key": new_key()}
    given = {**given, "audit_signing_key": new_key(), setting: value}

    with pytest.raises(BadKeys) as caught:
        keys.load(settings(tmp_path, **given))

    assert value not in str(caught.value)


def test_a_blank_index_key_in_the_environment_is_bad_keys(tmp_path: Path) -> None:
    given = {"audit_keys": f"k1:{new_key()}", "audit_signing_key": new_key()}

    with pytest.raises(BadKeys):
        keys.load(settings(tmp_path, audit_index_key="  ", **given))


# --- rotation -------------------------------------------------------------------------


def test_rotating_adds_a_record_key_and_makes_it_current(tmp_path: Path) -> None:
    before = make_keys(tmp_path)

    key_id = keys.rotate(settings(tmp_path))

    after = keys.load(settings(tmp_path))
    assert after.current == key_id != before.current
    assert set(after.records) == {*before.records, key_id}
    assert after.records[before.current] == before.records[before.current]
    assert after.index_key == before.index_key
    assert after.signing_key_id == before.signing_key_id
    # Written aside and moved into place: still owner-only, and nothing left behind.
    path = keys.key_file(settings(tmp_path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [keys.KEY_FILE, keys.SIGNING_KEY_FILE]


def test_after_a_rotation_older_records_still_decrypt(tmp_path: Path) -> None:
    before = make_keys(tmp_path)
    old_id, old_blob = cipher.encrypt(before, b"written before the rotation")

    keys.rotate(settings(tmp_path))
    after = keys.load(settings(tmp_path))
    new_id, new_blob = cipher.encrypt(after, b"written after")

    assert new_id != old_id
    assert cipher.decrypt(after, old_id, old_blob) == b"written before the rotation"
    assert cipher.decrypt(after, new_id, new_blob) == b"written after"


def test_rotating_refuses_when_record_keys_come_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(BadKeys, match="CARECOORD_AUDIT_KEYS"):
        keys.rotate(settings(tmp_path, audit_keys=f"k1:{new_key()}"))

    assert not keys.key_file(settings(tmp_path)).exists()


def test_a_keyring_picks_up_a_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_RELOAD_SECONDS", 0)
    keyring = keys.Keyring(settings(tmp_path), create=True)
    before = keyring.get()
    assert keyring.get().current == before.current

    key_id = keys.rotate(settings(tmp_path))
    path = keys.key_file(settings(tmp_path))
    stamp = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(stamp, stamp))

    after = keyring.get()
    assert after.current == key_id
    assert before.current in after.records


def test_a_keyring_waits_before_looking_at_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "_RELOAD_SECONDS", 3600)
    keyring = keys.Keyring(settings(tmp_path), create=True)
    before = keyring.get()

    keys.rotate(settings(tmp_path))

    # Until the reload interval has passed, the keys read before are still used.
    assert keyring.get() is before


# --- public keys ----------------------------------------------------------------------


def test_a_public_key_pem_round_trips(tmp_path: Path) -> None:
    public = make_keys(tmp_path).verify_key
    pem = keys.public_key_pem(public)

    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    loaded = keys.load_public_key(pem.encode())
    assert keys.public_key_id(loaded) == keys.public_key_id(public)
    assert keys.public_key_id(public).startswith("ed25519:")
    assert keys.public_key_id(public) != make_keys(tmp_path / "other").signing_key_id


@pytest.mark.parametrize(
    "pem",
    [b"garbage", b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"],
    ids=["garbage", "empty", "bad_body"],
)
def test_loading_a_garbage_public_key_is_bad_keys(pem: bytes) -> None:
    with pytest.raises(BadKeys):
        keys.load_public_key(pem)


def test_loading_a_non_ed25519_public_key_is_bad_keys() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    with pytest.raises(BadKeys, match="Ed25519"):
        keys.load_public_key(pem)


def test_loading_a_public_key_of_an_unknown_algorithm_is_bad_keys() -> None:
    der = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # Ed25519's OID 1.3.101.112 made 1.3.101.99, which no library knows.
    unknown = der.replace(bytes.fromhex("06032b6570"), bytes.fromhex("06032b6563"))
    pem = (
        b"-----BEGIN PUBLIC KEY-----\n"
        + base64.encodebytes(unknown)
        + b"-----END PUBLIC KEY-----\n"
    )

    with pytest.raises(BadKeys):
        keys.load_public_key(pem)
