"""Proofs of the audit log that anyone can check offline: the JSON bundle `carecoord audit
prove` writes (the signed checkpoint notes, the hashes, sizes and path) and the checks
`carecoord audit check-proof` runs on one with nothing but the log's verifier key.

Pure: text and keys in, a verdict out. A bundle is untrusted input: it is read only up to
MAX_BUNDLE bytes, parsed strictly (no duplicate or unknown fields, no type coercion, no
NaN) and every redundant field (the seq's chain, the leaf index, the leaf hash, the
sizes the notes state) must agree, or the bundle is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.audit import merkle, note
from services.audit.note import BadNote, Checkpoint, Verifier

FORMAT = "carecoord-audit-proof/1"
# A bundle is a few notes and at most ~130 hashes: anything larger is not one of ours.
MAX_BUNDLE = 256 * 1024
# The longest path a tree of 2**63 leaves needs (inclusion: 63; consistency: 2 * 63).
MAX_PATH = 128
# The extension line every carecoord checkpoint carries (covered by the signature).
SIGNED_AT = "carecoord-signed-at "
# ASCII digits only (str.isdigit also takes other scripts' digits); leading zeros name the
# same entry, as elsewhere in the API ('02:7' is '2:7').
_SEQ = re.compile(r"([0-9]{1,16}):([0-9]{1,24})")
MAX_CHAIN = 2**31 - 1
MAX_SEQ = 2**63 - 1


class BadBundle(ValueError):
    """A file that is not a proof bundle at all (unusable input: exit 2)."""


class Refused(ValueError):
    """A bundle that does not prove what it says (exit 1); the message says which check."""


def origin(log_name: str, chain: int) -> str:
    """The origin line of a chain's checkpoints."""
    return f"{log_name}/chain/{chain}"


def parse_seq(text: str) -> tuple[int, int]:
    """'2:17' -> (2, 17): ASCII digits only, a chain and a sequence in range; ValueError
    saying what is allowed otherwise."""
    found = _SEQ.fullmatch(text)
    if found is None or int(found[1]) > MAX_CHAIN or not 1 <= int(found[2]) <= MAX_SEQ:
        raise ValueError(
            "seq must be an audit entry's 'chain:sequence' (e.g. '2:17'): a chain from 0 to "
            f"{MAX_CHAIN} and a sequence from 1 to {MAX_SEQ}"
        )
    return int(found[1]), int(found[2])


def signed_at(checkpoint: Checkpoint) -> str | None:
    """When the checkpoint says it was signed (its carecoord extension line)."""
    for line in checkpoint.extensions:
        if line.startswith(SIGNED_AT):
            return line[len(SIGNED_AT) :]
    return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the proofs, as the log gives them ----------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    """Entry chain:seq is leaf seq - 1 of the chain's tree of `tree_size` leaves, whose
    root the signed note `checkpoint` states."""

    chain: int
    seq: int
    tree_size: int
    entry_hash: bytes
    path: tuple[bytes, ...]
    checkpoint: str

    @property
    def label(self) -> str:
        return f"{self.chain}:{self.seq}"

    @property
    def leaf_index(self) -> int:
        return self.seq - 1

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.entry_hash)

    def bundle(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "inclusion",
            "seq": self.label,
            "chain": self.chain,
            "leafIndex": self.leaf_index,
            "treeSize": self.tree_size,
            "entryHash": b64(self.entry_hash),
            "leafHash": b64(self.leaf_hash),
            "path": [b64(p) for p in self.path],
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class ConsistencyProof:
    """The chain's tree of `to_size` leaves (root in the signed note `to_checkpoint`)
    extends its tree of `from_size` leaves (root in `from_checkpoint`, when a note was
    signed at that size)."""

    chain: int
    from_size: int
    to_size: int
    path: tuple[bytes, ...]
    to_checkpoint: str
    from_checkpoint: str | None

    def bundle(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "consistency",
            "chain": self.chain,
            "fromSize": self.from_size,
            "toSize": self.to_size,
            "path": [b64(p) for p in self.path],
            "fromCheckpoint": self.from_checkpoint,
            "toCheckpoint": self.to_checkpoint,
        }


def dump(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, indent=2, ensure_ascii=True) + "\n"


# --- reading a bundle (strictly) ------------------------------------------------------------

Hash = Annotated[str, Field(min_length=44, max_length=44)]
Size = Annotated[int, Field(ge=1, le=merkle.MAX_SIZE - 1)]
Chain = Annotated[int, Field(ge=0, le=MAX_CHAIN)]
NoteText = Annotated[str, Field(min_length=1, max_length=note.MAX_NOTE)]


class _Bundle(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    format: Literal["carecoord-audit-proof/1"]
    chain: Chain
    path: Annotated[list[Hash], Field(max_length=MAX_PATH)]

    @field_validator("path")
    @classmethod
    def _hashes(cls, path: list[str]) -> list[str]:
        for item in path:
            _hash(item, "a path element")
        return path


class _Inclusion(_Bundle):
    kind: Literal["inclusion"]
    seq: Annotated[str, Field(max_length=40)]
    leafIndex: Annotated[int, Field(ge=0, le=merkle.MAX_SIZE)]
    treeSize: Size
    entryHash: Hash
    leafHash: Hash
    checkpoint: NoteText


class _Consistency(_Bundle):
    kind: Literal["consistency"]
    fromSize: Size
    toSize: Size
    fromCheckpoint: NoteText | None
    toCheckpoint: NoteText


def _hash(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != merkle.HASH_SIZE:
        raise ValueError(f"{what} is not a {merkle.HASH_SIZE}-byte hash")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BadBundle("the bundle names a field twice")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise BadBundle(f"the bundle holds {name}, which JSON does not allow")


def read(raw: bytes) -> InclusionProof | ConsistencyProof:
    """The proof a bundle file holds; BadBundle saying what is wrong (never echoing it),
    Refused when its fields contradict each other."""
    if len(raw) > MAX_BUNDLE:
        raise BadBundle(f"the file is larger than a proof bundle can be ({MAX_BUNDLE} bytes)")
    try:
        data = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise BadBundle("the file is not UTF-8 text") from None
    except RecursionError:
        raise BadBundle("the file is nested too deeply to be a proof bundle") from None
    except BadBundle:
        raise
    except json.JSONDecodeError as exc:
        raise BadBundle(f"the file is not JSON (line {exc.lineno}, column {exc.colno})") from None
    except ValueError:  # e.g. a number of more digits than Python converts
        raise BadBundle("the file holds a number no proof bundle has") from None
    if not isinstance(data, dict):
        raise BadBundle("a proof bundle is a JSON object")
    kind = data.get("kind")
    model: type[_Inclusion] | type[_Consistency]
    if kind == "inclusion":
        model = _Inclusion
    elif kind == "consistency":
        model = _Consistency
    else:
        raise BadBundle("the bundle's 'kind' is neither 'inclusion' nor 'consistency'")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise BadBundle(_first_problem(exc)) from None
    path = tuple(_hash(p, "a path element") for p in parsed.path)
    if isinstance(parsed, _Consistency):
        return ConsistencyProof(
            chain=parsed.chain,
            from_size=parsed.fromSize,
            to_size=parsed.toSize,
            path=path,
            to_checkpoint=parsed.toCheckpoint,
            from_checkpoint=parsed.fromCheckpoint,
        )
    try:
        chain, seq = parse_seq(parsed.seq)
    except ValueError as exc:
        raise BadBundle(f"'seq': {exc}") from None
    proof = InclusionProof(
        chain=parsed.chain,
        seq=seq,
        tree_size=parsed.treeSize,
        entry_hash=_hash(parsed.entryHash, "entryHash"),
        path=path,
        checkpoint=parsed.checkpoint,
    )
    # The redundant fields must say the same thing as the ones the check uses: a bundle
    # that contradicts itself proves nothing.
    if chain != parsed.chain:
        raise Refused(f"'seq' names chain {chain} but 'chain' is {parsed.chain}")
    if parsed.leafIndex != proof.leaf_index:
        raise Refused(f"'leafIndex' of entry {proof.label} would be {proof.leaf_index}")
    if _hash(parsed.leafHash, "leafHash") != proof.leaf_hash:
        raise Refused("'leafHash' is not the RFC 9162 leaf hash of 'entryHash'")
    return proof


def _first_problem(exc: ValidationError) -> str:
    # The field and what is wrong with it; never the value, which came from the file.
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "the bundle"
    return f"'{where}': {error['msg']}"


# --- checking (offline) ---------------------------------------------------------------------


def _open(text: str, verifier: Verifier, chain: int, size: int, which: str) -> Checkpoint:
    try:
        checkpoint = note.open_note(text, verifier)
    except BadNote as exc:
        raise Refused(f"the {which} checkpoint: {exc}") from None
    wanted = origin(verifier.name, chain)
    if checkpoint.origin != wanted:
        raise Refused(f"the {which} checkpoint is not of {wanted}")
    if checkpoint.size != size:
        raise Refused(f"the {which} checkpoint is of a tree of {checkpoint.size}, not {size}")
    return checkpoint


def check(
    proof: InclusionProof | ConsistencyProof,
    verifier: Verifier,
    *,
    kept: str | None = None,
) -> str:
    """One line saying what the bundle proves, once every check passed; Refused naming
    the check that failed. `kept`: a signed note of the earlier size that the checker
    kept itself (a consistency proof needs one, in the bundle or here)."""
    if isinstance(proof, InclusionProof):
        return _check_inclusion(proof, verifier)
    return _check_consistency(proof, verifier, kept)


def _check_inclusion(proof: InclusionProof, verifier: Verifier) -> str:
    if not proof.seq <= proof.tree_size:
        raise Refused(f"entry {proof.label} is not in a tree of {proof.tree_size}")
    checkpoint = _open(proof.checkpoint, verifier, proof.chain, proof.tree_size, "signed")
    try:
        merkle.verify_inclusion(
            proof.leaf_index, proof.tree_size, proof.leaf_hash, proof.path, checkpoint.root
        )
    except merkle.InvalidProof as exc:
        raise Refused(f"the inclusion proof of entry {proof.label}: {exc}") from None
    return (
        f"OK: entry {proof.label} is in the tree of {proof.tree_size} entries of chain "
        f"{proof.chain} that {verifier.name} signed{_when(checkpoint)}"
    )


def _check_consistency(proof: ConsistencyProof, verifier: Verifier, kept: str | None) -> str:
    if not proof.from_size <= proof.to_size:
        raise Refused(f"no tree of {proof.to_size} extends one of {proof.from_size}")
    later = _open(proof.to_checkpoint, verifier, proof.chain, proof.to_size, "later")
    earlier: list[Checkpoint] = []
    for text, which in ((proof.from_checkpoint, "earlier"), (kept, "kept")):
        if text is not None:
            earlier.append(_open(text, verifier, proof.chain, proof.from_size, which))
    if not earlier:
        raise BadBundle(
            f"the bundle carries no signed checkpoint of size {proof.from_size} to check "
            "against: pass the one you kept"
        )
    for checkpoint in earlier:
        try:
            merkle.verify_consistency(
                proof.from_size, proof.to_size, checkpoint.root, later.root, proof.path
            )
        except merkle.InvalidProof as exc:
            raise Refused(f"the consistency proof of chain {proof.chain}: {exc}") from None
    return (
        f"OK: chain {proof.chain}'s tree of {proof.to_size} entries{_when(later)} extends "
        f"its tree of {proof.from_size}{_when(earlier[0])}, both signed by {verifier.name}"
    )


def _when(checkpoint: Checkpoint) -> str:
    at = signed_at(checkpoint)
    return f" (signed {at})" if at else ""
