"""Record encryption, blind indexes, entry hashes and checkpoint signatures: the pure
cryptography under the audit log."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import chain, cipher, keys
from services.audit.keys import AuditKeys
from services.settings import Settings

SIGNED_AT = datetime(2024, 5, 1, 9, 30, 12, 345678, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CARECOORD_AUDIT_KEYS",
        "CARECOORD_AUDIT_INDEX_KEY",
        "CARECOORD_AUDIT_SIGNING_KEY",
        "CARECOORD_AUDIT_PUBLIC_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def make_keys(data_dir: Path) -> AuditKeys:
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    return keys.load(settings, create=True)


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path / "one")


@pytest.fixture
def other_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path / "two")


# --- encryption -----------------------------------------------------------------------


def test_a_record_decrypts_to_what_was_encrypted(audit_keys: AuditKeys) -> None:
    key_id, blob = cipher.encrypt(audit_keys, b'{"patient_id": "p-1"}')

    assert key_id == audit_keys.current
    assert cipher.decrypt(audit_keys, key_id, blob) == b'{"patient_id": "p-1"}'


def test_the_ciphertext_does_not_contain_the_plaintext(audit_keys: AuditKeys) -> None:
    _, blob = cipher.encrypt(audit_keys, b"patient p-123456")

    assert b"p-123456" not in blob


def test_two_encryptions_of_the_same_text_differ(audit_keys: AuditKeys) -> None:
    _, first = cipher.encrypt(audit_keys, b"same text")
    _, second = cipher.encrypt(audit_keys, b"same text")

    assert first != second
    assert first[: cipher.NONCE_BYTES] != second[: cipher.NONCE_BYTES]


def test_decrypting_under_an_unknown_key_id_is_undecryptable(audit_keys: AuditKeys) -> None:
    _, blob = cipher.encrypt(audit_keys, b"text")

    with pytest.raises(cipher.Undecryptable, match="k9"):
        cipher.decrypt(audit_keys, "k9", blob)


def test_decrypting_under_another_known_key_id_is_undecryptable(audit_keys: AuditKeys) -> None:
    # The key id is bound into the ciphertext: relabelling an entry with another of the
    # keyring's ids fails even where the key itself would be the same.
    keyring = dataclasses.replace(
        audit_keys, records={**audit_keys.records, "k2": audit_keys.records[audit_keys.current]}
    )
    _, blob = cipher.encrypt(keyring, b"text")

    with pytest.raises(cipher.Undecryptable):
        cipher.decrypt(keyring, "k2", blob)


def test_decrypting_with_another_keyrings_key_is_undecryptable(
    audit_keys: AuditKeys, other_keys: AuditKeys
) -> None:
    key_id, blob = cipher.encrypt(audit_keys, b"text")

    with pytest.raises(cipher.Undecryptable):
        cipher.decrypt(other_keys, key_id, blob)


@pytest.mark.parametrize("position", [0, cipher.NONCE_BYTES, -1], ids=["nonce", "body", "tag"])
def test_a_flipped_byte_is_undecryptable(audit_keys: AuditKeys, position: int) -> None:
    key_id, blob = cipher.encrypt(audit_keys, b"some record text")
    changed = bytearray(blob)
    changed[position] ^= 0x01

    with pytest.raises(cipher.Undecryptable, match="changed"):
        cipher.decrypt(audit_keys, key_id, bytes(changed))


@pytest.mark.parametrize(
    "blob", [b"", b"\x00" * 5, b"\x00" * 20], ids=["empty", "short", "tagless"]
)
def test_a_truncated_ciphertext_is_undecryptable(audit_keys: AuditKeys, blob: bytes) -> None:
    with pytest.raises(cipher.Undecryptable):
        cipher.decrypt(audit_keys, audit_keys.current, blob)


# --- blind indexes --------------------------------------------------------------------


def test_a_blind_index_is_the_same_for_the_same_kind_and_value(audit_keys: AuditKeys) -> None:
    first = cipher.blind(audit_keys, "patient", "p-1")

    assert first == cipher.blind(audit_keys, "patient", "p-1")
    assert len(first) == cipher.INDEX_BYTES


def test_a_blind_index_differs_for_another_value(audit_keys: AuditKeys) -> None:
    assert cipher.blind(audit_keys, "patient", "p-1") != cipher.blind(audit_keys, "patient", "p-2")


def test_a_blind_index_differs_across_kinds(audit_keys: AuditKeys) -> None:
    assert cipher.blind(audit_keys, "patient", "u-1") != cipher.blind(audit_keys, "actor", "u-1")


def test_a_blind_index_differs_across_index_keys(
    audit_keys: AuditKeys, other_keys: AuditKeys
) -> None:
    assert cipher.blind(audit_keys, "patient", "p-1") != cipher.blind(other_keys, "patient", "p-1")


def test_a_blind_index_does_not_reveal_the_value(audit_keys: AuditKeys) -> None:
    assert b"p-1" not in cipher.blind(audit_keys, "patient", "p-1")


# --- entry hashes ---------------------------------------------------------------------

ENTRY: dict[str, Any] = {
    "chain": 1,
    "seq": 7,
    "prev_hash": b"\x11" * 32,
    "key_id": "k1",
    "ciphertext": b"\x22" * 40,
}


def test_an_entry_hash_is_a_sha256_digest_that_repeats() -> None:
    first = chain.entry_hash(**ENTRY)

    assert len(first) == 32
    assert first == chain.entry_hash(**ENTRY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chain", 2),
        ("seq", 8),
        ("prev_hash", b"\x12" + b"\x11" * 31),
        ("key_id", "k2"),
        ("ciphertext", b"\x22" * 39 + b"\x23"),
        ("ciphertext", b"\x22" * 39),
    ],
    ids=["chain", "seq", "prev", "key_id", "ciphertext", "shorter_ciphertext"],
)
def test_an_entry_hash_changes_when_any_part_changes(field: str, value: object) -> None:
    assert chain.entry_hash(**{**ENTRY, field: value}) != chain.entry_hash(**ENTRY)


def test_moving_bytes_between_key_id_and_ciphertext_changes_the_hash() -> None:
    # The key id is framed by its length, so "k1"+"x..." and "k1x"+"..." differ.
    moved = {**ENTRY, "key_id": "k1\x22", "ciphertext": b"\x22" * 39}

    assert chain.entry_hash(**moved) != chain.entry_hash(**ENTRY)


def test_the_genesis_hash_is_32_zero_bytes() -> None:
    assert bytes(32) == chain.GENESIS


# --- checkpoints ----------------------------------------------------------------------

HEAD = b"\x33" * 32


def _signed(key: Ed25519PrivateKey) -> dict[str, Any]:
    signature = chain.sign_checkpoint(key, 3, 1000, HEAD, SIGNED_AT)
    return {
        "chain": 3,
        "seq": 1000,
        "head_hash": HEAD,
        "signed_at": SIGNED_AT,
        "signature": signature,
    }


def test_a_checkpoint_signature_verifies(audit_keys: AuditKeys) -> None:
    assert chain.checkpoint_signed(audit_keys.verify_key, **_signed(audit_keys.signing_key))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chain", 4),
        ("seq", 1001),
        ("head_hash", b"\x34" + b"\x33" * 31),
        ("signed_at", SIGNED_AT + timedelta(microseconds=1)),
        ("signature", b"\x00" * 64),
    ],
    ids=["chain", "seq", "hash", "signed_at", "signature"],
)
def test_a_checkpoint_fails_when_any_part_changes(
    audit_keys: AuditKeys, field: str, value: object
) -> None:
    signed = _signed(audit_keys.signing_key)

    assert not chain.checkpoint_signed(audit_keys.verify_key, **{**signed, field: value})


def test_a_checkpoint_with_one_flipped_signature_bit_fails(audit_keys: AuditKeys) -> None:
    signed = _signed(audit_keys.signing_key)
    signature = bytearray(signed["signature"])
    signature[10] ^= 0x80

    assert not chain.checkpoint_signed(
        audit_keys.verify_key, **{**signed, "signature": bytes(signature)}
    )


def test_a_checkpoint_fails_under_another_key(audit_keys: AuditKeys, other_keys: AuditKeys) -> None:
    signed = _signed(other_keys.signing_key)

    assert not chain.checkpoint_signed(audit_keys.verify_key, **signed)
    assert chain.checkpoint_signed(other_keys.verify_key, **signed)
