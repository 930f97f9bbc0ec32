"""The fast paths of the audit log give what the plain definitions give: blind indexes are
HMAC-SHA-256, entry hashes and ciphertexts keep their layout (vectors made by the code
before the fast paths), rows sealed in a run are seal()'s entries, and rows fed as the
database returns them verify as entries do."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.audit import AccessRecorded
from schemas.codec import encode_access
from schemas.common import AccessOutcome, Purpose, Sensitivity
from services.audit import chain, cipher, keys
from services.audit.keys import AuditKeys
from services.audit.store import Entry, Sealer, entry_row, seal
from services.audit.verify import Verification, Verifier
from services.settings import Settings
from tests.factories import access_recorded

WHEN = datetime(2024, 5, 1, 9, 30, 12, 345678, tzinfo=UTC)
# Fixed keys, so the vectors below (computed before the fast paths) stay comparable.
FIXED = AuditKeys(
    records={"k1": bytes(range(32))},
    current="k1",
    index_key=bytes(range(100, 132)),
    signing_key=Ed25519PrivateKey.from_private_bytes(bytes(32)),
    source="test",
)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEYS", "INDEX_KEY", "SIGNING_KEY"):
        monkeypatch.delenv(f"CARECOORD_AUDIT_{name}", raising=False)


@pytest.fixture
def ks(tmp_path: Path) -> AuditKeys:
    settings = Settings(data_dir=tmp_path / "keys", _env_file=None)  # type: ignore[call-arg]
    return keys.load(settings, create=True)


def access(n: int, **fields: Any) -> AccessRecorded:
    varied: dict[str, Any] = {
        "patient_id": f"p-{n}" if n % 4 else None,
        "resource_id": None,
        "sensitivity": (Sensitivity.GENETIC, Sensitivity.MENTAL_HEALTH) if n % 2 else (),
    }
    return access_recorded(n, at=WHEN + timedelta(seconds=n), **{**varied, **fields})


# --- the stored format is unchanged ----------------------------------------------------


def test_blind_indexes_match_the_vectors_made_before() -> None:
    assert cipher.blind(FIXED, "patient", "p-1").hex() == "331196076722d34d1a0d2b29b68ad853"
    assert cipher.blind(FIXED, "actor", "u-ä").hex() == "6a037b7a12009cf62bbb324ca6ca02ef"


@pytest.mark.parametrize("key_len", [1, 32, 64, 65, 100])
@pytest.mark.parametrize("value", ["", "p-1", "ünïcødé ✓", "x" * 300])
def test_a_blind_index_is_hmac_sha256_cut_to_16_bytes(key_len: int, value: str) -> None:
    key = bytes((7 * i + key_len) % 256 for i in range(key_len))
    expected = hmac.digest(key, f"patient\x00{value}".encode(), "sha256")[: cipher.INDEX_BYTES]

    assert cipher.blinder(key, "patient")(value) == expected
    assert cipher.blinder(key, "patient")(value) == expected  # the padded states are reused


def test_entry_hashes_match_the_definition_and_the_vector_made_before() -> None:
    prev, blob = bytes(range(32)), b"blob-bytes"
    kid = b"k1"
    defined = hashlib.sha256(
        b"carecoord-audit-entry|v1|" + struct.pack(">iqH", 3, 7, len(kid)) + kid + prev + blob
    ).digest()

    assert chain.entry_hash(3, 7, prev, "k1", blob) == defined
    assert defined.hex() == "18e64b53ec35b23e73c68bc7185408f8b030f2977003551bc7f055920fb03ffd"


def test_ciphertexts_keep_their_layout() -> None:
    at = cipher.place(3, 7, "r-1")
    made_before = bytes.fromhex(
        "000102030405060708090a0b3c20b739ffd4bffc587aba2006ffeff24dccce00ef199b"
    )
    key_id, encrypt = cipher.encryptor(FIXED)

    assert key_id == "k1"
    assert encrypt(bytes(range(12)), b'{"a":1}', at) == made_before
    assert cipher.decrypt(FIXED, "k1", made_before, at=at) == b'{"a":1}'
    nonce, sealed = made_before[:12], made_before[12:]
    aad = b"carecoord-audit-record|k1" + at
    assert AESGCM(FIXED.records["k1"]).decrypt(nonce, sealed, aad) == b'{"a":1}'


def test_nonces_are_fresh_and_of_the_right_size() -> None:
    drawn = cipher.nonces(1000)

    assert len(drawn) == 1000 and {len(n) for n in drawn} == {cipher.NONCE_BYTES}
    assert len(set(drawn)) == 1000
    assert cipher.nonces(0) == []


def test_an_unknown_key_id_fails_each_time_it_is_opened(ks: AuditKeys) -> None:
    open_blob = cipher.opener(ks, "k9")
    for _ in range(2):
        with pytest.raises(cipher.Undecryptable, match="not among the keys"):
            open_blob(b"x" * 40, b"")


# --- rows sealed in a run are seal()'s entries ----------------------------------------


def test_rows_sealed_in_a_run_are_the_entries_seal_makes(ks: AuditKeys) -> None:
    records = [access(n) for n in range(12)]
    sealer = Sealer(ks, 2, 40, chain.GENESIS)

    rows = list(sealer.rows(records))

    prev = chain.GENESIS
    for seq, (row, record) in enumerate(zip(rows, records, strict=True), start=41):
        entry = Entry(*row)
        single = seal(ks, 2, seq, prev, record)
        # Same columns but the ciphertext (its nonce is random), hence the hash.
        assert dataclasses.replace(entry, ciphertext=b"", hash=b"") == dataclasses.replace(
            single, ciphertext=b"", hash=b""
        )
        assert entry.prev_hash == prev
        assert entry.hash == chain.entry_hash(2, seq, prev, entry.key_id, entry.ciphertext)
        plain = cipher.decrypt(ks, entry.key_id, entry.ciphertext, at=cipher.place(2, seq, row[3]))
        assert plain == encode_access(record)
        assert entry.patient_ix == (
            cipher.blind(ks, "patient", record.patient_id) if record.patient_id else None
        )
        assert entry.actor_ix == cipher.blind(ks, "actor", record.actor_id)
        prev = entry.hash
    assert (sealer.seq, sealer.prev) == (52, prev)
    assert len({row[5][: cipher.NONCE_BYTES] for row in rows}) == len(rows)


# --- rows as the database returns them verify as entries do ----------------------------


def as_fetched(entry: Entry) -> tuple[Any, ...]:
    """The row asyncpg returns: sensitivity as a list."""
    row = list(entry_row(entry))
    row[-1] = list(row[-1])
    return tuple(row)


def both_ways(ks: AuditKeys, entries: list[Entry]) -> Verification:
    # The entries alone (the stored tree is fed and checked in test_audit_verify).
    one = Verifier(ks, tree=False)
    for entry in entries:
        one.feed(entry)
    rows = Verifier(ks, tree=False)
    rows.feed_rows([as_fetched(e) for e in entries[:3]])
    rows.feed_rows([as_fetched(e) for e in entries[3:]])
    assert one.result([]) == rows.result([])
    return rows.result([])


def run(ks: AuditKeys, chain_no: int, count: int) -> list[Entry]:
    sealer = Sealer(ks, chain_no, 0, chain.GENESIS)
    return [Entry(*row) for row in sealer.rows([access(n) for n in range(count)])]


def test_an_intact_log_fed_as_rows_verifies(ks: AuditKeys) -> None:
    result = both_ways(ks, [*run(ks, 1, 8), *run(ks, 2, 5)])

    assert result.ok and (result.entries_checked, result.chains) == (13, 2)


TAMPERING: dict[str, Any] = {
    "ciphertext": lambda e: {"ciphertext": e.ciphertext[:-1] + bytes([e.ciphertext[-1] ^ 1])},
    "hash": lambda e: {"hash": bytes(32)},
    "patient_ix": lambda e: {"patient_ix": bytes(16)},
    "actor_ix": lambda e: {"actor_ix": bytes(16)},
    "outcome": lambda e: {"outcome": AccessOutcome.DENY.value},
    "purpose": lambda e: {"purpose": Purpose.RESEARCH.value},
    "sensitivity": lambda e: {"sensitivity": ("GENETIC",)},
    "at": lambda e: {"at": e.at.astimezone(timezone(timedelta(hours=2))) + timedelta(1)},
    "key_id": lambda e: {"key_id": "k9"},
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_changed_row_is_named_either_way(ks: AuditKeys, change: Any) -> None:
    entries = run(ks, 1, 6)
    entries[4] = dataclasses.replace(entries[4], **change(entries[4]))

    result = both_ways(ks, entries)

    # A changed hash breaks the next entry's link as well.
    after = ["1:6"] if "hash" in change(entries[4]) else []
    assert [p.label for p in result.problems] == ["1:5", *after]


@pytest.mark.parametrize("damage", ["removed", "swapped", "repeated"])
def test_a_removed_reordered_or_repeated_row_is_named_either_way(
    ks: AuditKeys, damage: str
) -> None:
    entries = run(ks, 1, 6)
    if damage == "removed":
        del entries[2]
    elif damage == "swapped":
        entries[2], entries[3] = entries[3], entries[2]
    else:
        entries.insert(3, entries[2])

    result = both_ways(ks, entries)

    assert result.first is not None and result.first.label == "1:3"
