"""Proof bundles of the audit log checked offline (`carecoord audit check-proof`): a good one
passes with one line; a forged one (another leaf, a shortened path, a wrong size, a note
signed by another key or altered after signing, another chain's note) is refused, exit 1;
a file that is no bundle is unusable, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.audit import merkle, note, proofs
from services.audit.proofs import BadBundle, ConsistencyProof, InclusionProof, Refused
from services.cli import app
from tests.signed_log import NAME, OTHER_KEY, VKEY, Chain


def bundle_bytes(proof: InclusionProof | ConsistencyProof, **changes: Any) -> bytes:
    data = proof.bundle()
    data.update(changes)
    return json.dumps(data).encode()


def check(raw: bytes, kept: str | None = None) -> str:
    return proofs.check(proofs.read(raw), note.parse_vkey(VKEY), kept=kept)


def check_proof(tmp_path: Path, raw: bytes, *extra: str, vkey: str = VKEY) -> tuple[int, str]:
    path = tmp_path / "proof.json"
    path.write_bytes(raw)
    done = CliRunner().invoke(app, ["audit", "check-proof", str(path), "--vkey", vkey, *extra])
    return done.exit_code, done.output


CHAIN = Chain(3, 13)


def test_a_genuine_inclusion_proof_passes_offline_with_one_line(tmp_path: Path) -> None:
    for seq, size in [(1, 1), (1, 13), (7, 8), (13, 13), (5, 6)]:
        code, out = check_proof(tmp_path, bundle_bytes(CHAIN.inclusion(seq, size)))
        assert code == 0, out
        assert out.count("\n") == 1
        assert out.startswith(f"OK: entry 3:{seq} is in the tree of {size} entries of chain 3")


def test_a_proof_for_another_leaf_is_refused(tmp_path: Path) -> None:
    genuine = CHAIN.inclusion(5, 13)
    # Entry 6's hash, with entry 5's path (the index follows the claimed entry).
    other = CHAIN.hashes[5]
    forged = bundle_bytes(
        genuine,
        entryHash=proofs.b64(other),
        leafHash=proofs.b64(merkle.leaf_hash(other)),
    )
    code, out = check_proof(tmp_path, forged)
    assert code == 1
    assert "BAD: the inclusion proof of entry 3:5: the proof leads to another root" in out
    # Entry 5's own path presented as entry 6's.
    moved = bundle_bytes(genuine, seq="3:6", leafIndex=5)
    assert check_proof(tmp_path, moved)[0] == 1


def test_a_shortened_or_lengthened_path_is_refused(tmp_path: Path) -> None:
    genuine = CHAIN.inclusion(5, 13).bundle()
    for path in (genuine["path"][:-1], genuine["path"][1:], [*genuine["path"], genuine["path"][0]]):
        code, out = check_proof(tmp_path, bundle_bytes(CHAIN.inclusion(5, 13), path=path))
        assert code == 1, out
    code, out = check_proof(tmp_path, bundle_bytes(CHAIN.inclusion(5, 13), path=[]))
    assert (code, "shorter than the tree is deep" in out) == (1, True)


def test_a_wrong_tree_size_is_refused(tmp_path: Path) -> None:
    # The size claimed differs from the note's.
    code, out = check_proof(tmp_path, bundle_bytes(CHAIN.inclusion(5, 13), treeSize=12))
    assert (code, "the signed checkpoint is of a tree of 13, not 12" in out) == (1, True)
    # A path for a tree of 12 presented with the genuine note of 13.
    of_12 = CHAIN.inclusion(5, 12)
    code, out = check_proof(tmp_path, bundle_bytes(of_12, treeSize=13, checkpoint=CHAIN.note(13)))
    assert code == 1, out
    # An entry beyond the tree.
    code, _ = check_proof(tmp_path, bundle_bytes(CHAIN.inclusion(5, 5), seq="3:6", leafIndex=5))
    assert code == 1


def test_a_note_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    forged = bundle_bytes(CHAIN.inclusion(5, 13), checkpoint=CHAIN.note(13, key=OTHER_KEY))
    code, out = check_proof(tmp_path, forged)
    assert (code, f"the note carries no signature by {NAME}" in out) == (1, True)
    # Checked with the other key's vkey instead, the genuine bundle is refused.
    other = note.vkey(NAME, OTHER_KEY.public_key())
    assert check_proof(tmp_path, bundle_bytes(CHAIN.inclusion(5, 13)), vkey=other)[0] == 1


def test_a_note_altered_after_signing_is_refused(tmp_path: Path) -> None:
    genuine = CHAIN.inclusion(5, 13)
    forged_root = CHAIN._hash(0, 12)
    text = genuine.checkpoint.replace(proofs.b64(CHAIN._hash(0, 13)), proofs.b64(forged_root))
    assert text != genuine.checkpoint
    code, out = check_proof(tmp_path, bundle_bytes(genuine, checkpoint=text))
    assert (code, f"the signature by {NAME} does not verify" in out) == (1, True)
    longer = genuine.checkpoint.replace("\n13\n", "\n14\n")
    assert check_proof(tmp_path, bundle_bytes(genuine, checkpoint=longer, treeSize=14))[0] == 1


def test_another_chains_note_is_refused(tmp_path: Path) -> None:
    # Chain 4 with the very same entries: same root, but its origin names another chain.
    forged = bundle_bytes(CHAIN.inclusion(5, 13), checkpoint=CHAIN.note(13, chain=4))
    code, out = check_proof(tmp_path, forged)
    assert (code, f"the signed checkpoint is not of {NAME}/chain/3" in out) == (1, True)


def test_a_genuine_consistency_proof_passes_and_a_forked_one_is_refused(tmp_path: Path) -> None:
    for first, second in [(1, 13), (4, 13), (7, 13), (8, 8), (12, 13)]:
        code, out = check_proof(tmp_path, bundle_bytes(CHAIN.consistency(first, second)))
        assert code == 0, out
        assert out.startswith(f"OK: chain 3's tree of {second} entries")
    forked = Chain(3, 13, seed="rewritten")
    # The rewritten history's own proof, against the genuine earlier note.
    proof = forked.consistency(7, 13)
    code, out = check_proof(tmp_path, bundle_bytes(proof, fromCheckpoint=CHAIN.note(7)))
    assert (code, "does not lead to the earlier root" in out) == (1, True)
    # A shortened path, and a wrong earlier size.
    genuine = CHAIN.consistency(7, 13).bundle()
    assert (
        check_proof(tmp_path, bundle_bytes(CHAIN.consistency(7, 13), path=genuine["path"][:-1]))[0]
        == 1
    )
    assert check_proof(tmp_path, bundle_bytes(CHAIN.consistency(7, 13), fromSize=6))[0] == 1


def test_a_consistency_proof_is_checked_against_the_note_the_checker_kept(tmp_path: Path) -> None:
    bare = bundle_bytes(CHAIN.consistency(7, 13, with_first=False))
    code, out = check_proof(tmp_path, bare)
    assert (code, "no signed checkpoint of size 7" in out) == (2, True)
    kept = tmp_path / "kept.note"
    kept.write_text(CHAIN.note(7))
    assert check_proof(tmp_path, bare, "--checkpoint", str(kept))[0] == 0
    # The note kept from before a fork does not match the rewritten history.
    kept.write_text(Chain(3, 13, seed="before").note(7))
    code, out = check_proof(tmp_path, bare, "--checkpoint", str(kept))
    assert (code, "does not lead to the earlier root" in out) == (1, True)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "a JSON object"),
        (b'{"kind": "other"}', "neither"),
        (b"[" * 200_000 + b"]" * 200_000, "larger than"),
        (b'{"a": ' + b"[" * 60_000 + b"]" * 60_000 + b"}", "nested too deeply"),
        (b'{"kind": "inclusion", "kind": "inclusion"}', "twice"),
        (b'{"kind": "inclusion", "chain": NaN}', "NaN"),
        (b'{"kind": "inclusion", "chain": 1' + b"0" * 5000 + b"}", "number"),
    ],
)
def test_a_file_that_is_no_bundle_is_unusable_input(raw: bytes, why: str) -> None:
    with pytest.raises(BadBundle, match=why):
        proofs.read(raw)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"treeSize": "13"}, "treeSize"),
        ({"treeSize": 13.0}, "treeSize"),
        ({"chain": True}, "chain"),
        ({"treeSize": 0}, "treeSize"),
        ({"extra": 1}, "extra"),
        ({"format": "carecoord-audit-proof/2"}, "format"),
        ({"entryHash": "AAAA"}, "entryHash"),
        ({"path": ["!" * 44]}, "path"),
        ({"path": [proofs.b64(bytes(32))] * 129}, "path"),
        ({"seq": "3:\u0665"}, "seq"),
        ({"seq": "3:0"}, "seq"),
    ],
)
def test_a_bundle_with_a_malformed_field_names_the_field(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadBundle, match=field):
        proofs.read(bundle_bytes(CHAIN.inclusion(5, 13), **change))


def test_the_check_proof_command_says_what_it_needs(tmp_path: Path) -> None:
    raw = bundle_bytes(CHAIN.inclusion(5, 13))
    code, out = check_proof(tmp_path, raw, vkey="not-a-vkey")
    assert (code, "the verifier key" in out) == (2, True)
    path = tmp_path / "proof.json"
    done = CliRunner().invoke(app, ["audit", "check-proof", str(path)])
    assert (done.exit_code, "--vkey" in done.output) == (2, True)
    done = CliRunner().invoke(app, ["audit", "check-proof", str(tmp_path / "none"), "--vkey", VKEY])
    assert done.exit_code == 2
    key_file = tmp_path / "vkey"
    key_file.write_text(VKEY + "\n")
    done = CliRunner().invoke(
        app, ["audit", "check-proof", str(path), "--vkey-file", str(key_file)]
    )
    assert done.exit_code == 0, done.output


def test_the_redundant_fields_must_agree() -> None:
    genuine = CHAIN.inclusion(5, 13)
    for change in ({"chain": 4}, {"leafIndex": 5}, {"leafHash": proofs.b64(bytes(32))}):
        with pytest.raises(Refused):
            check(bundle_bytes(genuine, **change))
    assert check(bundle_bytes(genuine)).startswith("OK")
