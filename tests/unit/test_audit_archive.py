"""An archived month checks offline with the log's verifier key alone, and every kind of
tampering with the bundle is named."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import archive, merkle, note
from services.audit import chain as chains
from services.audit.archive import BadArchive

KEY = Ed25519PrivateKey.generate()
NAME = "carecoord.test/audit"
VERIFIER = note.parse_vkey(note.vkey(NAME, KEY.public_key()))
AT = datetime(2026, 1, 15, tzinfo=UTC)  # only a value carried in the entries


def chain_rows(chain: int, n: int) -> list[tuple[object, ...]]:
    rows, prev = [], chains.GENESIS
    for seq in range(1, n + 1):
        blob = os.urandom(40)
        digest = chains.entry_hash(chain, seq, prev, "k1", blob)
        rows.append(
            (
                AT + timedelta(seconds=seq),
                chain,
                seq,
                f"r{chain}-{seq}",
                "k1",
                blob,
                prev,
                digest,
                None,
                b"a" * 32,
                "PERMIT",
                "TREATMENT",
                (),
            )
        )
        prev = digest
    return rows


def bundle(
    archived: dict[int, list[int]], sizes: dict[int, int], key: Ed25519PrivateKey = KEY
) -> tuple[bytes, list[bytes]]:
    """The bundle of the entries `archived` (chain -> seqs) of chains of `sizes` entries."""
    lines: list[bytes] = []
    parts = []
    for chain, size in sorted(sizes.items()):
        rows = chain_rows(chain, size)
        leaves = [r[7] for r in rows]
        nodes = {(lvl, idx): h for lvl, idx, h in merkle.new_nodes(0, (), leaves)}  # type: ignore[arg-type]
        seqs = archived[chain]
        lines += [archive.entry_line(rows[s - 1]) for s in seqs]
        cp = note.Checkpoint(f"{NAME}/chain/{chain}", size, merkle.root(leaves))  # type: ignore[arg-type]
        cover = [
            (lvl, idx, nodes[(lvl, idx)]) for lvl, idx in merkle.cover(size, [s - 1 for s in seqs])
        ]
        parts.append(
            archive.ChainPart(chain, archive.ranges(seqs), note.sign(cp, NAME, key), cover)
        )
    digest = hashlib.sha256(b"".join(lines)).hexdigest()
    return archive.manifest("2026-01", NAME, digest, parts), lines


ARCHIVED = {0: [1, 2, 3, 4, 5, 9, 10], 1: [3]}
SIZES = {0: 13, 1: 6}


def test_an_archived_month_checks_offline() -> None:
    raw, lines = bundle(ARCHIVED, SIZES)
    checked = archive.check(raw, lines, VERIFIER)
    assert (checked.entries, checked.chains, checked.sizes) == (8, 2, {0: 13, 1: 6})


def _rewrite(raw: bytes, change: Callable[[dict], None]) -> bytes:  # type: ignore[type-arg]
    doc = orjson.loads(raw)
    change(doc)
    return orjson.dumps(doc)


def _flip_ciphertext(lines: list[bytes]) -> list[bytes]:
    doc = orjson.loads(lines[2])
    blob = bytearray(doc["ciphertext"].encode())
    blob[5] = ord("A") if blob[5] != ord("A") else ord("B")
    doc["ciphertext"] = blob.decode()
    return [*lines[:2], orjson.dumps(doc) + b"\n", *lines[3:]]


def _swap_checkpoints(doc: dict) -> None:  # type: ignore[type-arg]
    a, b = doc["chains"]
    a["checkpoint"], b["checkpoint"] = b["checkpoint"], a["checkpoint"]


def _redigest(raw: bytes, lines: list[bytes]) -> bytes:
    return _rewrite(
        raw, lambda d: d.update(entries_sha256=hashlib.sha256(b"".join(lines)).hexdigest())
    )


@pytest.mark.parametrize(
    ("what", "tamper", "named"),
    [
        (
            "a flipped ciphertext byte",
            lambda raw, lines: (_redigest(raw, _flip_ciphertext(lines)), _flip_ciphertext(lines)),
            "altered",
        ),
        (
            "an entry removed",
            lambda raw, lines: (_redigest(raw, lines[1:]), lines[1:]),
            "entries listed",
        ),
        (
            "two entries swapped",
            lambda raw, lines: (
                _redigest(raw, [lines[1], lines[0], *lines[2:]]),
                [lines[1], lines[0], *lines[2:]],
            ),
            "out of order",
        ),
        (
            "entries.jsonl changed after the manifest",
            lambda raw, lines: (raw, lines[1:]),
            "not the file",
        ),
        (
            "a cover node altered",
            lambda raw, lines: (
                _rewrite(
                    raw,
                    lambda d: d["chains"][0]["cover"][0].__setitem__(
                        2, d["chains"][1]["cover"][0][2]
                    ),
                ),
                lines,
            ),
            "signed root",
        ),
        (
            "a cover node dropped",
            lambda raw, lines: (_rewrite(raw, lambda d: d["chains"][0]["cover"].pop()), lines),
            "missing",
        ),
        (
            "the checkpoints of two chains exchanged",
            lambda raw, lines: (_rewrite(raw, _swap_checkpoints), lines),
            "another chain",
        ),
        (
            "another log's archive",
            lambda raw, lines: (
                _rewrite(raw, lambda d: d.update(log="other.example/audit")),
                lines,
            ),
            "of the log",
        ),
        (
            "an entry not listed",
            lambda raw, lines: (
                _rewrite(raw, lambda d: d["chains"][1].update(seqs=[[4, 4]])),
                lines,
            ),
            "not listed",
        ),
        ("not JSON", lambda raw, lines: (b"{", lines), "not JSON"),
    ],
)
def test_tampering_with_a_bundle_is_named(what: str, tamper, named: str) -> None:  # type: ignore[no-untyped-def]
    raw, lines = bundle(ARCHIVED, SIZES)
    bad_raw, bad_lines = tamper(raw, lines)
    with pytest.raises(BadArchive, match=named):
        archive.check(bad_raw, bad_lines, VERIFIER)


def test_a_bundle_signed_by_another_key_is_refused() -> None:
    raw, lines = bundle(ARCHIVED, SIZES, key=Ed25519PrivateKey.generate())
    with pytest.raises(BadArchive, match="no signature by"):
        archive.check(raw, lines, VERIFIER)


def test_sequences_become_runs() -> None:
    assert archive.ranges([5, 1, 2, 3, 9, 10, 2]) == [(1, 3), (5, 5), (9, 10)]
