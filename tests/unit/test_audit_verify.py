"""The verifier, fed chains built with `seal` and then tampered with as an attacker with
database access would: each kind of change is named at the right entry or checkpoint."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from schemas.audit import AccessRecorded
from schemas.common import AccessOutcome, Purpose, Sensitivity
from services.audit import chain, cipher, keys, merkle, store
from services.audit import verify as verify_module
from services.audit.keys import AuditKeys
from services.audit.store import Checkpoint, Entry, seal
from services.audit.verify import Verification, Verifier
from services.settings import Settings
from tests.factories import access_recorded

WHEN = datetime(2024, 5, 1, 9, 30, 12, 345678, tzinfo=UTC)
SIGNED_AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEYS", "INDEX_KEY", "SIGNING_KEY"):
        monkeypatch.delenv(f"CARECOORD_AUDIT_{name}", raising=False)


def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]


def make_keys(data_dir: Path) -> AuditKeys:
    return keys.load(settings(data_dir), create=True)


@pytest.fixture
def ks(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path / "keys")


def access(n: int, **fields: Any) -> AccessRecorded:
    return access_recorded(n, at=WHEN + timedelta(seconds=n), **fields)


def build(ks: AuditKeys, chain_no: int, count: int, **fields: Any) -> list[Entry]:
    entries: list[Entry] = []
    prev = chain.GENESIS
    for seq in range(1, count + 1):
        entry = seal(ks, chain_no, seq, prev, access(chain_no * 100 + seq, **fields))
        entries.append(entry)
        prev = entry.hash
    return entries


def checkpoint(
    ks: AuditKeys, entry: Entry, *, head: bytes | None = None, after: Checkpoint | None = None
) -> Checkpoint:
    """A checkpoint of `entry`, following the chain's checkpoint `after` (None: its first)."""
    head = entry.hash if head is None else head
    prev = chain.checkpoint_digest(after.signature) if after else chain.GENESIS
    signature = chain.sign_checkpoint(ks.signing_key, entry.chain, entry.seq, head, SIGNED_AT, prev)
    return Checkpoint(entry.chain, entry.seq, head, SIGNED_AT, ks.signing_key_id, signature, prev)


def verify(
    ks: AuditKeys, entries: Iterable[Entry], checkpoints: Sequence[Checkpoint] = (), **kw: Any
) -> Verification:
    kw.setdefault("tree", False)  # the tree's own tests feed it
    verifier = Verifier(ks, **kw)
    verifier.expect_checkpoints(checkpoints)
    for entry in entries:
        verifier.feed(entry)
    return verifier.result(checkpoints)


def flipped(entry: Entry, *, rehash: bool = False) -> Entry:
    blob = bytearray(entry.ciphertext)
    blob[cipher.NONCE_BYTES + 2] ^= 0x01
    changed = dataclasses.replace(entry, ciphertext=bytes(blob))
    if rehash:
        fresh = chain.entry_hash(entry.chain, entry.seq, entry.prev_hash, entry.key_id, bytes(blob))
        changed = dataclasses.replace(changed, hash=fresh)
    return changed


def only_problem(result: Verification) -> tuple[str, str]:
    assert len(result.problems) == 1, result.problems
    assert result.first is not None
    return result.first.label, result.first.what


def test_an_intact_log_of_two_chains_verifies(ks: AuditKeys) -> None:
    one, two = build(ks, 1, 5), build(ks, 2, 3)
    first = checkpoint(ks, one[2])
    cps = [first, checkpoint(ks, one[4], after=first), checkpoint(ks, two[2])]

    result = verify(ks, [*one, *two], cps)

    assert result.ok and result.first is None
    assert (result.entries_checked, result.chains, result.checkpoints_checked) == (8, 2, 3)
    assert verify(ks, []) == Verification(entries_checked=0, chains=0, checkpoints_checked=0)


def test_a_flipped_ciphertext_byte_is_named_as_the_first_bad_entry(ks: AuditKeys) -> None:
    entries = build(ks, 1, 5)
    entries[2] = flipped(entries[2])

    label, what = only_problem(verify(ks, entries))

    assert label == "1:3" and "changed" in what


def test_a_flipped_byte_with_a_recomputed_hash_fails_authentication(ks: AuditKeys) -> None:
    entries = build(ks, 1, 5)
    entries[2] = flipped(entries[2], rehash=True)

    result = verify(ks, entries)

    # The re-hash also breaks the next entry's link to it.
    assert [p.label for p in result.problems] == ["1:3", "1:4"]
    assert result.first is not None and "authentication" in result.first.what


def test_a_resealed_entry_is_caught_at_the_next_entrys_link(ks: AuditKeys) -> None:
    # An attacker with the keys writes another record at 1:3 with a valid hash.
    entries = build(ks, 1, 5)
    entries[2] = seal(ks, 1, 3, entries[1].hash, access(7, outcome=AccessOutcome.PERMIT))

    label, what = only_problem(verify(ks, entries))

    assert label == "1:4" and "does not follow 1:3" in what


def test_a_rewritten_tail_is_caught_by_a_checkpoint_over_it(ks: AuditKeys) -> None:
    entries = build(ks, 1, 6)
    early = checkpoint(ks, entries[1])
    late = checkpoint(ks, entries[4], after=early)
    prev = entries[1].hash
    for i in range(2, 6):
        entries[i] = seal(ks, 1, i + 1, prev, access(50 + i))
        prev = entries[i].hash

    assert verify(ks, entries, [early]).ok
    label, what = only_problem(verify(ks, entries, [early, late]))
    assert label == "1:5" and "no longer matches" in what


REMOVALS = {
    "middle": (slice(2, 3), "1:3", "entry 1:3 is missing (removed): the chain jumps to 1:4"),
    "range": (slice(1, 4), "1:2", "entry 1:2 to 1:4 is missing"),
    "first": (slice(0, 1), "1:1", "entry 1:1 is missing"),
}


@pytest.mark.parametrize(("removed", "label", "named"), REMOVALS.values(), ids=REMOVALS.keys())
def test_a_removed_entry_names_the_missing_seq(
    ks: AuditKeys, removed: slice, label: str, named: str
) -> None:
    entries = build(ks, 1, 6)
    del entries[removed]

    found, what = only_problem(verify(ks, entries))

    assert found == label and named in what


def test_a_removed_last_entry_is_caught_only_by_a_checkpoint_over_it(ks: AuditKeys) -> None:
    entries = build(ks, 1, 5)
    cp = checkpoint(ks, entries[4])

    assert verify(ks, entries[:4]).ok
    label, what = only_problem(verify(ks, entries[:4], [cp]))
    assert label == "1:5" and "cut short" in what


def test_two_swapped_entries_name_the_first_swapped_position(ks: AuditKeys) -> None:
    entries = build(ks, 1, 5)
    second, third = entries[1], entries[2]
    # What swapping the seq values of two rows gives, read back in seq order.
    entries[1:3] = [dataclasses.replace(third, seq=2), dataclasses.replace(second, seq=3)]

    result = verify(ks, entries)

    assert result.first is not None and result.first.label == "1:2"
    assert "1:2" in result.first.what


def test_a_duplicate_seq_is_reported(ks: AuditKeys) -> None:
    entries = build(ks, 1, 4)
    entries.insert(2, entries[1])

    result = verify(ks, entries)

    label, what = only_problem(result)
    assert label == "1:2" and "repeated" in what
    assert result.entries_checked == 5


@pytest.mark.parametrize("field", ["signature", "hash", "signed_at"])
def test_a_forged_or_altered_checkpoint_is_named(ks: AuditKeys, field: str) -> None:
    entries = build(ks, 1, 4)
    cp = checkpoint(ks, entries[3])
    changes = {"signature": bytes(64), "hash": entries[2].hash, "signed_at": WHEN}
    forged = dataclasses.replace(cp, **{field: changes[field]})

    label, what = only_problem(verify(ks, entries, [forged]))

    assert label == "1:4" and "bad signature" in what


def test_a_checkpoint_signed_with_another_key_is_named(ks: AuditKeys, tmp_path: Path) -> None:
    other = make_keys(tmp_path / "other")
    entries = build(ks, 1, 4)
    cp = checkpoint(other, entries[3])
    relabelled = dataclasses.replace(cp, signing_key_id=ks.signing_key_id)

    label, what = only_problem(verify(ks, entries, [cp]))
    assert label == "1:4" and "unknown key" in what
    label, what = only_problem(verify(ks, entries, [relabelled]))
    assert label == "1:4" and "bad signature" in what


def test_checkpoints_verify_under_a_given_public_key(ks: AuditKeys, tmp_path: Path) -> None:
    other = make_keys(tmp_path / "other")
    entries = build(ks, 1, 4)
    cps = [checkpoint(other, entries[3])]

    assert verify(ks, entries, cps, public_key=other.verify_key).ok
    assert not verify(ks, entries, [checkpoint(ks, entries[3])], public_key=other.verify_key).ok


def test_a_validly_signed_checkpoint_whose_hash_no_longer_matches_is_named(ks: AuditKeys) -> None:
    entries = build(ks, 1, 4)
    cp = checkpoint(ks, entries[2], head=bytes(range(32)))

    label, what = only_problem(verify(ks, entries, [cp]))

    assert label == "1:3" and "no longer matches" in what


def test_a_checkpoint_over_a_removed_middle_entry_is_named(ks: AuditKeys) -> None:
    entries = build(ks, 1, 5)
    cp = checkpoint(ks, entries[2])
    del entries[2]

    result = verify(ks, entries, [cp])

    assert [p.label for p in result.problems] == ["1:3", "1:3"]
    assert "checkpoint 1:3 names an entry that is missing" in result.problems[1].what


# Each takes the chain and gives the columns of its third entry an attacker rewrites.
TAMPERED_INDEXES: dict[str, Any] = {
    "patient_ix_of_another": lambda es: {"patient_ix": es[1].patient_ix},
    "patient_ix_removed": lambda es: {"patient_ix": None},
    "actor_ix_of_another": lambda es: {"actor_ix": es[0].actor_ix},
    "deny_to_permit": lambda es: {"outcome": AccessOutcome.PERMIT.value},
    "purpose": lambda es: {"purpose": Purpose.RESEARCH.value},
    "sensitivity": lambda es: {"sensitivity": ()},
    "record_id": lambda es: {"record_id": str(uuid.uuid4())},
    "at": lambda es: {"at": es[2].at + timedelta(seconds=1)},
}


@pytest.mark.parametrize("change", TAMPERED_INDEXES.values(), ids=TAMPERED_INDEXES.keys())
def test_a_tampered_index_column_is_caught(ks: AuditKeys, change: Any) -> None:
    entries = build(ks, 1, 5, outcome=AccessOutcome.DENY, sensitivity=(Sensitivity.GENETIC,))
    original = entries[2]
    entries[2] = dataclasses.replace(original, **change(entries))
    assert entries[2] != original

    label, what = only_problem(verify(ks, entries))

    # The record id is bound into the tag as well: changed, it no longer decrypts.
    assert label == "1:3" and ("index columns" in what or "authentication" in what)


def test_an_entry_under_an_unknown_key_id_is_reported(ks: AuditKeys, tmp_path: Path) -> None:
    keys.rotate(settings(tmp_path / "keys"))
    rotated = keys.load(settings(tmp_path / "keys"))
    entries = build(ks, 1, 2)
    entries.append(seal(rotated, 1, 3, entries[1].hash, access(3)))

    label, what = only_problem(verify(ks, entries))

    assert label == "1:3" and rotated.current in what
    assert verify(rotated, entries).ok


def test_a_removed_checkpoint_breaks_the_next_ones_link(ks: AuditKeys) -> None:
    entries = build(ks, 1, 9)
    first = checkpoint(ks, entries[2])
    second = checkpoint(ks, entries[5], after=first)
    third = checkpoint(ks, entries[8], after=second)

    label, what = only_problem(verify(ks, entries, [first, third]))

    assert label == "1:9" and "a checkpoint was removed" in what


def test_old_entries_no_checkpoint_covers_are_named(ks: AuditKeys) -> None:
    entries = build(ks, 1, 6)
    covered = checkpoint(ks, entries[2])
    later = entries[0].at + timedelta(days=1)

    label, what = only_problem(verify(ks, entries, [covered], unsigned_before=later))

    assert label == "1:4" and "no checkpoint covers them" in what
    recent = entries[0].at - timedelta(days=1)
    assert verify(ks, entries, [covered], unsigned_before=recent).ok


def test_first_is_the_earliest_problem_by_chain_then_seq(ks: AuditKeys) -> None:
    one, two = build(ks, 1, 5), build(ks, 2, 5)
    one[3] = flipped(one[3])
    two[1] = flipped(two[1])
    forged = dataclasses.replace(checkpoint(ks, one[2]), signature=bytes(64))

    result = verify(ks, [*one, *two], [forged])

    assert sorted(p.label for p in result.problems) == ["1:3", "1:4", "2:2"]
    assert result.first is not None and result.first.label == "1:3"


@pytest.mark.parametrize("damage", ["flip", "index", "remove"])
def test_one_bad_entry_in_a_long_chain_is_one_problem(ks: AuditKeys, damage: str) -> None:
    entries = build(ks, 1, 60)
    first = checkpoint(ks, entries[29])
    cps = [first, checkpoint(ks, entries[59], after=first)]
    if damage == "flip":
        entries[20] = flipped(entries[20])
    elif damage == "index":
        entries[20] = dataclasses.replace(entries[20], outcome=AccessOutcome.DENY.value)
    else:
        del entries[20]

    result = verify(ks, entries, cps)

    assert len(result.problems) == 1, result.problems
    assert result.first is not None and result.first.label == "1:21"


def test_a_validly_encrypted_non_object_record_is_reported_not_raised(ks: AuditKeys) -> None:
    entries = build(ks, 1, 3)
    key_id, blob = cipher.encrypt(ks, b"[]")
    fresh = chain.entry_hash(1, 3, entries[1].hash, key_id, blob)
    entries[2] = dataclasses.replace(entries[2], key_id=key_id, ciphertext=blob, hash=fresh)

    label, what = only_problem(verify(ks, entries))

    assert label == "1:3" and "changed" in what


# --- the Merkle tree and the checkpoints' signed notes ----------------------------------


def tree_rows(entries: Sequence[Entry]) -> list[tuple[int, int, int, bytes]]:
    """The chain's stored nodes as the store reads them back: (chain, position, level,
    hash), in the order appending makes them."""
    by_chain: dict[int, list[bytes]] = {}
    for e in entries:
        by_chain.setdefault(e.chain, []).append(e.hash)
    return [
        (c, ((idx + 1) << level) - 1, level, digest)
        for c, hashes in sorted(by_chain.items())
        for level, idx, digest in merkle.new_nodes(0, (), hashes)
    ]


def noted(ks: AuditKeys, cp: Checkpoint, entries: Sequence[Entry], **changes: Any) -> Checkpoint:
    """The checkpoint with the root of its chain's entries up to it and its signed note."""
    data = [e.hash for e in entries if e.chain == cp.chain and e.seq <= cp.seq]
    fields: dict[str, Any] = {
        "log_name": store.LOG_NAME,
        "chain": cp.chain,
        "seq": cp.seq,
        "root": merkle.root(data),
        "signed_at": cp.signed_at,
    }
    fields.update(changes)
    text = store.checkpoint_note(ks, **fields)
    return dataclasses.replace(cp, root=merkle.root(data), note=text)


def verify_tree(
    ks: AuditKeys,
    entries: Sequence[Entry],
    rows: Sequence[Sequence[Any]],
    checkpoints: Sequence[Checkpoint] = (),
    *,
    chunk: int = 7,
) -> Verification:
    """Entries and nodes fed as AuditReader.verify feeds them, `chunk` entries at a time."""
    verifier = Verifier(ks)
    verifier.expect_checkpoints(checkpoints)
    nodes = iter(rows)
    for start in range(0, len(entries), chunk):
        verifier.feed_rows(store.entry_row(e) for e in entries[start : start + chunk])
        wanted = verifier.nodes_pending()
        verifier.feed_nodes([r for _, r in zip(range(wanted), nodes, strict=False)])
    verifier.feed_nodes(list(nodes))
    return verifier.result(checkpoints)


def test_the_stored_tree_and_signed_notes_of_an_untouched_log_verify(ks: AuditKeys) -> None:
    entries = build(ks, 1, 13) + build(ks, 2, 5)
    first = noted(ks, checkpoint(ks, entries[7]), entries)
    cps = [first, noted(ks, checkpoint(ks, entries[12], after=first), entries)]
    rows = tree_rows(entries)

    for chunk in (1, 5, 100):
        result = verify_tree(ks, entries, rows, cps, chunk=chunk)
        assert result.ok, result.problems
        assert result.nodes_checked == len(rows) == (13 + 6 + 3 + 1) + (5 + 2 + 1)


@pytest.mark.parametrize(
    ("damage", "label"),
    [
        ("changed", "1:8"),  # node (2, 1) over 1:5 to 1:8, made when 1:8 was appended
        ("removed", "1:8"),
        ("extra", "1:14"),  # a node beyond the chain's last entry
    ],
)
def test_a_bad_tree_node_is_named_by_the_entry_that_made_it(
    ks: AuditKeys, damage: str, label: str
) -> None:
    entries = build(ks, 1, 13)
    rows = tree_rows(entries)
    at = rows.index(next(r for r in rows if r[1:3] == (7, 2)))  # (level 2, index 1)
    if damage == "changed":
        rows[at] = (*rows[at][:3], bytes(32))
    elif damage == "removed":
        del rows[at]
    else:
        rows.append((1, 13, 0, bytes(32)))

    result = verify_tree(ks, entries, rows)

    assert len(result.problems) == 1, result.problems
    assert result.first is not None and result.first.label == label
    node = (
        "(level 0, index 13) of 1:14 " if damage == "extra" else "(level 2, index 1) of 1:5 to 1:8 "
    )
    assert f"tree node {node}" in result.first.what, result.first.what


def test_the_tree_of_a_chain_with_a_replaced_entry_differs_from_the_stored_one(
    ks: AuditKeys,
) -> None:
    # Entries re-chained by someone with the record key but not the signing key: each
    # entry checks out, the stored tree (or the signed roots) does not.
    entries = build(ks, 1, 6)
    rows = tree_rows(entries)
    forged = build(ks, 1, 6, reason="rewritten")
    result = verify_tree(ks, forged, rows)
    assert result.first is not None and result.first.label == "1:1"


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("origin", "another log or chain"),
        ("size", "another size"),
        ("root", "not the root of the chain's entries"),
        ("root_column", "not the one its signed note states"),
        ("signed_at", "another signing time"),
        ("other_key", "does not verify|no signature"),
        ("edited", "does not verify"),
        ("stripped", "lost its signed note"),
    ],
)
def test_a_bad_signed_note_is_named(ks: AuditKeys, tmp_path: Path, damage: str, says: str) -> None:
    entries = build(ks, 1, 8)
    first = noted(ks, checkpoint(ks, entries[3]), entries)
    second = noted(ks, checkpoint(ks, entries[7], after=first), entries)
    if damage == "origin":
        second = noted(ks, second, entries, chain=2)
    elif damage == "size":
        second = noted(ks, second, entries, seq=9)
    elif damage == "root":
        second = noted(ks, second, entries, root=bytes(32))
        second = dataclasses.replace(second, root=bytes(32))
    elif damage == "root_column":
        second = dataclasses.replace(second, root=bytes(32))
    elif damage == "signed_at":
        second = noted(ks, second, entries, signed_at=WHEN)
    elif damage == "other_key":
        second = noted(make_keys(tmp_path / "other"), second, entries)
    elif damage == "edited":
        assert second.note is not None
        second = dataclasses.replace(second, note=second.note.replace("\n8\n", "\n7\n"))
    else:
        second = dataclasses.replace(second, root=None, note=None)

    result = verify_tree(ks, entries, tree_rows(entries), [first, second])

    assert result.first is not None and result.first.label == "1:8", result.problems
    assert re.search(says, result.first.what), result.first.what


def node_digests(entries: Sequence[Entry], bits: int) -> list[tuple[Any, ...]]:
    """The stored nodes' blocks as store.tree_node_digests reads them: (chain, level, block,
    nodes, first index, last index, SHA-256 of the hashes in index order)."""
    blocks: dict[tuple[int, int, int], list[tuple[int, bytes]]] = {}
    by_chain: dict[int, list[bytes]] = {}
    for e in entries:
        by_chain.setdefault(e.chain, []).append(e.hash)
    for c, hashes in by_chain.items():
        for level, idx, digest in merkle.new_nodes(0, (), hashes):
            blocks.setdefault((c, level, idx >> bits), []).append((idx, digest))
    return [
        (
            *key,
            len(nodes),
            min(nodes)[0],
            max(nodes)[0],
            sha256(b"".join(d for _, d in sorted(nodes))).digest(),
        )
        for key, nodes in sorted(blocks.items())
    ]


def verify_digests(
    ks: AuditKeys,
    entries: Sequence[Entry],
    blocks: Iterable[Sequence[Any]],
    cps: Sequence[Checkpoint],
) -> tuple[bool, Verification]:
    verifier = Verifier(ks, node_digests=True)
    verifier.expect_checkpoints(cps)
    verifier.expect_node_digests(blocks)
    verifier.feed_rows(store.entry_row(e) for e in entries)
    return verifier.tree_differs(), verifier.result(cps)


@pytest.mark.parametrize("bits", [1, 2, verify_module.BLOCK_BITS])
def test_the_tree_compared_a_block_at_a_time_passes_untouched_and_names_a_changed_block(
    ks: AuditKeys, monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    monkeypatch.setattr(verify_module, "BLOCK_BITS", bits)
    monkeypatch.setattr(verify_module, "_BLOCK", 1 << bits)
    entries = build(ks, 1, 13) + build(ks, 2, 5)
    first = noted(ks, checkpoint(ks, entries[7]), entries)
    cps = [first, noted(ks, checkpoint(ks, entries[12], after=first), entries)]
    blocks = node_digests(entries, bits)

    differs, result = verify_digests(ks, entries, blocks, cps)
    assert not differs and result.ok, result.problems
    assert result.nodes_checked == len(tree_rows(entries))

    # Chain 1, level 1, node 2 (over entries 1:5 and 1:6): its block is named, by the
    # entries whose appends made the block's nodes.
    at = next(i for i, b in enumerate(blocks) if b[:3] == (1, 1, 2 >> bits))
    changed = [*blocks]
    changed[at] = (*blocks[at][:6], bytes(32))
    differs, result = verify_digests(ks, entries, changed, cps)
    first_entry = ((2 >> bits) << (bits + 1)) + 1
    assert differs and result.first is not None
    assert result.first.label == f"1:{first_entry}"
    assert "tree nodes (level 1)" in result.first.what
    assert result.nodes_checked == 0

    # A node missing from a block (its count and last index tell), a block the entries do
    # not make, a block missing: each differs.
    short = [*blocks]
    short[at] = (
        *blocks[at][:3],
        blocks[at][3] - 1,
        blocks[at][4],
        blocks[at][5] - 1,
        blocks[at][6],
    )
    extra = [*blocks, (2, 0, 99, 1, 99 << bits, 99 << bits, bytes(32))]
    for damaged in (short, extra, blocks[1:]):
        differs, result = verify_digests(ks, entries, damaged, cps)
        assert differs and not result.ok
