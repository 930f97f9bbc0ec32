"""An archived month of the audit log: its entries, still encrypted, with what proves them
offline: for each chain, the signed checkpoint covering them and the Merkle tree nodes
that cover the rest of that chain. Pure: building the manifest, and checking a bundle
with nothing but the log's verifier key (no database, no network, no record keys).

A bundle is a folder of two files:
- `entries.jsonl`: one entry per line, as stored (bytes in base64), chain then seq order;
- `manifest.json`: the format, the month, the log's key name, the SHA-256 of
  entries.jsonl, and per chain the archived sequences (inclusive ranges), the signed
  note of a checkpoint at or beyond the last of them, and the cover nodes
  (level, index, base64 hash) of merkle.cover for that checkpoint's size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from services.audit import chain as chains
from services.audit import merkle, note
from services.audit.store import ENTRY_COLUMNS

FORMAT = "carecoord-audit-archive/1"
ENTRIES = "entries.jsonl"
MANIFEST = "manifest.json"
# A manifest holds a few nodes per chain and gap: far below this.
MAX_MANIFEST = 16 * 1024 * 1024
MAX_LINE = 1024 * 1024
_BYTES = ("ciphertext", "prev_hash", "hash", "patient_ix", "actor_ix")
_FIELDS = ENTRY_COLUMNS  # an entry line holds an entry as stored


class BadArchive(ValueError):
    """A bundle that is malformed or does not verify; the message says where and why."""


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct sequences as inclusive (first, last) runs."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def entry_line(row: Sequence[Any]) -> bytes:
    """One stored entry (ENTRY_COLUMNS order) as a line of entries.jsonl."""
    values = dict(zip(_FIELDS, row, strict=True))
    for name in _BYTES:
        if values[name] is not None:
            values[name] = base64.b64encode(bytes(values[name])).decode()
    values["sensitivity"] = list(values["sensitivity"])
    return orjson.dumps(values) + b"\n"


@dataclass
class ChainPart:
    chain: int
    seqs: list[tuple[int, int]]
    checkpoint: str
    cover: list[tuple[int, int, bytes]]

    def as_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "seqs": [list(r) for r in self.seqs],
            "checkpoint": self.checkpoint,
            "cover": [[lvl, idx, base64.b64encode(h).decode()] for lvl, idx, h in self.cover],
        }


def manifest(month: str, log_name: str, entries_sha256: str, parts: Sequence[ChainPart]) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "month": month,
            "log": log_name,
            "entries_sha256": entries_sha256,
            "chains": [p.as_json() for p in parts],
        },
        option=orjson.OPT_INDENT_2,
    )


@dataclass
class Checked:
    month: str
    entries: int
    chains: int
    # Per chain, the size of the signed checkpoint the entries were proved against.
    sizes: dict[int, int] = field(default_factory=dict)


def _b64(value: object, what: str, size: int | None = 32) -> bytes:
    if not isinstance(value, str):
        raise BadArchive(f"{what} is not base64 text")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise BadArchive(f"{what} is not base64") from None
    if size is not None and len(raw) != size:
        raise BadArchive(f"{what} is not {size} bytes")
    return raw


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < merkle.MAX_SIZE:
        raise BadArchive(f"{what} is not a whole number in range")
    return value


def _parts(raw: bytes) -> tuple[dict[str, Any], dict[int, ChainPart]]:
    if len(raw) > MAX_MANIFEST:
        raise BadArchive("the manifest is too large")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadArchive("the manifest is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadArchive(f"the manifest is not a {FORMAT} manifest")
    chains_doc = doc.get("chains")
    if not isinstance(chains_doc, list):
        raise BadArchive("the manifest lists no chains")
    parts: dict[int, ChainPart] = {}
    for i, c in enumerate(chains_doc):
        if not isinstance(c, dict):
            raise BadArchive(f"chain {i} of the manifest is not an object")
        chain = _int(c.get("chain"), f"chain {i}'s number")
        seqs_doc, cover_doc, cp = c.get("seqs"), c.get("cover"), c.get("checkpoint")
        if (
            not isinstance(seqs_doc, list)
            or not isinstance(cover_doc, list)
            or not isinstance(cp, str)
        ):
            raise BadArchive(f"chain {chain}: seqs, cover and checkpoint are required")
        seqs: list[tuple[int, int]] = []
        for r in seqs_doc:
            if not isinstance(r, list) or len(r) != 2:
                raise BadArchive(f"chain {chain}: a sequence range is [first, last]")
            first, last = _int(r[0], "a sequence"), _int(r[1], "a sequence")
            if not 1 <= first <= last or (seqs and first <= seqs[-1][1] + 1):
                raise BadArchive(f"chain {chain}: the sequence ranges are not sorted and apart")
            seqs.append((first, last))
        cover = []
        for n in cover_doc:
            if not isinstance(n, list) or len(n) != 3:
                raise BadArchive(f"chain {chain}: a cover node is [level, index, hash]")
            level, index = _int(n[0], "a node level"), _int(n[1], "a node index")
            cover.append((level, index, _b64(n[2], f"chain {chain}'s node ({level}, {index})")))
        if chain in parts:
            raise BadArchive(f"chain {chain} is listed twice")
        parts[chain] = ChainPart(chain, seqs, cp, cover)
    return doc, parts


def _entries(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(lines, 1):
        if len(line) > MAX_LINE:
            raise BadArchive(f"entries line {n} is too long")
        try:
            values = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BadArchive(f"entries line {n} is not JSON") from None
        if not isinstance(values, dict) or set(values) != set(_FIELDS):
            raise BadArchive(f"entries line {n} does not hold the fields of an entry")
        yield values


def check(manifest_raw: bytes, entry_lines: Iterable[bytes], verifier: note.Verifier) -> Checked:
    """Check a bundle offline: every entry's hash and chain link, every chain's entries
    against its signed checkpoint through the Merkle tree, the note's signature by the
    log's key, and the manifest's digest of the entries. BadArchive names the first fault."""
    doc, parts = _parts(manifest_raw)
    if doc.get("log") != verifier.name:
        raise BadArchive(f"the archive is of the log {doc.get('log')!r}, not {verifier.name!r}")
    month = doc.get("month")
    if not isinstance(month, str):
        raise BadArchive("the manifest names no month")
    digest = hashlib.sha256()
    leaves: dict[int, dict[int, bytes]] = {c: {} for c in parts}
    last: tuple[int, int, bytes] | None = None
    count = 0
    for values in _entries(_digesting(entry_lines, digest)):
        count += 1
        chain, seq = (
            _int(values["chain"], "an entry's chain"),
            _int(values["seq"], "an entry's seq"),
        )
        here = f"entry {chain}:{seq}"
        if chain not in parts or not any(a <= seq <= b for a, b in parts[chain].seqs):
            raise BadArchive(f"{here} is not listed in the manifest")
        if last is not None and (chain, seq) <= last[:2]:
            raise BadArchive(f"{here} is out of order or repeated")
        key_id = values["key_id"]
        if not isinstance(key_id, str):
            raise BadArchive(f"{here}: the key id is not text")
        blob = _b64(values["ciphertext"], f"{here}'s ciphertext", None)
        prev = _b64(values["prev_hash"], f"{here}'s previous hash")
        stored = _b64(values["hash"], f"{here}'s hash")
        if chains.entry_hash(chain, seq, prev, key_id, blob) != stored:
            raise BadArchive(f"{here} was altered: its hash does not match its content")
        if last is not None and last[:2] == (chain, seq - 1) and last[2] != prev:
            raise BadArchive(f"{here} does not follow {chain}:{seq - 1}")
        try:
            datetime.fromisoformat(str(values["at"]))
        except ValueError:
            raise BadArchive(f"{here}: the access time is not ISO 8601") from None
        leaves[chain][seq - 1] = merkle.leaf_hash(stored)
        last = (chain, seq, stored)
    if digest.hexdigest() != doc.get("entries_sha256"):
        raise BadArchive("entries.jsonl is not the file the manifest was made with")
    checked = Checked(month=month, entries=count, chains=len(parts))
    for chain, part in sorted(parts.items()):
        expected = sum(b - a + 1 for a, b in part.seqs)
        if len(leaves[chain]) != expected:
            raise BadArchive(
                f"chain {chain}: {expected} entries listed, {len(leaves[chain])} found"
            )
        try:
            cp = note.open_note(part.checkpoint, verifier)
        except note.BadNote as exc:
            raise BadArchive(f"chain {chain}: the checkpoint: {exc}") from None
        if cp.origin != f"{verifier.name}/chain/{chain}":
            raise BadArchive(f"chain {chain}: the checkpoint is of another chain ({cp.origin})")
        if part.seqs and cp.size < part.seqs[-1][1]:
            raise BadArchive(f"chain {chain}: the checkpoint does not cover the archived entries")
        nodes = {(lvl, idx): h for lvl, idx, h in part.cover}
        if len(nodes) != len(part.cover):
            raise BadArchive(f"chain {chain}: a cover node is listed twice")
        try:
            got = merkle.root_from_cover(cp.size, leaves[chain], nodes)
        except merkle.InvalidProof as exc:
            raise BadArchive(f"chain {chain}: {exc}") from None
        if got != cp.root:
            raise BadArchive(f"chain {chain}: the entries and nodes do not make the signed root")
        checked.sizes[chain] = cp.size
    return checked


def _digesting(lines: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    for line in lines:
        digest.update(line)
        if line.strip():
            yield line
