"""A witness's judgement of the audit log's checkpoints, pure: what it last verified per
chain (kept outside the database), and what a new checkpoint means beside it.

For each chain the witness keeps the last checkpoint it verified (size, root, the signed
note). A new checkpoint must be signed by the log's key and name the chain as its origin;
then, beside the one kept:

- a smaller tree is a **tail truncation** (entries and their checkpoints removed);
- the same size with another root, or a larger tree the log cannot prove consistent
  with the kept one (RFC 9162 §2.1.4), is a **forked history** (entries rewritten and
  re-signed, which takes the signing key);
- a chain that had a checkpoint and now has none, and no entries, is a **deleted chain**;
  one that still has entries but no checkpoint has had its **checkpoints deleted**;
- otherwise the new checkpoint replaces the kept one.

A chain seen for the first time is trusted on first use (its note's signature checked).
Nothing here does I/O: services.audit.witnessing fetches checkpoints and proofs and keeps
the state file.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.audit import merkle, note
from services.audit.note import BadNote, Checkpoint, Verifier
from services.audit.proofs import origin

FORMAT = "carecoord-witness/1"
# The state of a witness of many chains stays small; a larger file is not one of ours.
MAX_STATE = 16 * 1024 * 1024


class Kind(StrEnum):
    TAIL_TRUNCATION = "tail truncation"
    FORKED_HISTORY = "forked history"
    DELETED_CHAIN = "deleted chain"
    DELETED_CHECKPOINTS = "deleted checkpoints"
    # Not signed by the log's key, another chain's origin, or not a checkpoint at all.
    BAD_CHECKPOINT = "bad checkpoint"


@dataclass(frozen=True)
class Seen:
    """The last checkpoint the witness verified for a chain."""

    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class Problem:
    """What is wrong with a chain; `why` holds sizes and hashes only (no PHI exists here)."""

    chain: int
    kind: Kind
    why: str

    def __str__(self) -> str:
        return f"chain {self.chain}: {self.kind}: {self.why}"


@dataclass(frozen=True)
class Accept:
    """Keep `seen` for the chain from now on (`grew_from`: the size it was proved to
    extend; None the first time a chain is seen)."""

    chain: int
    seen: Seen
    grew_from: int | None


@dataclass(frozen=True)
class Unchanged:
    chain: int


@dataclass(frozen=True)
class NeedProof:
    """The chain grew: ask the log for PROOF(first, second) and pass it to `conclude`."""

    chain: int
    first: int
    second: int
    checkpoint: Checkpoint
    note: str


Step = Problem | Accept | Unchanged | NeedProof


def open_checkpoint(chain: int, text: str, verifier: Verifier) -> Checkpoint | Problem:
    """The checkpoint a note carries, if signed by the log's key for this chain."""
    try:
        checkpoint = note.open_note(text, verifier)
    except BadNote as exc:
        return Problem(chain, Kind.BAD_CHECKPOINT, str(exc))
    if checkpoint.origin != origin(verifier.name, chain):
        return Problem(chain, Kind.BAD_CHECKPOINT, "the note's origin is not this chain")
    return checkpoint


def assess(chain: int, seen: Seen | None, text: str, verifier: Verifier) -> Step:
    """What the chain's newest note means beside the one kept."""
    checkpoint = open_checkpoint(chain, text, verifier)
    if isinstance(checkpoint, Problem):
        return checkpoint
    new = Seen(checkpoint.size, checkpoint.root, text)
    if seen is None:
        return Accept(chain, new, grew_from=None)
    if checkpoint.size < seen.size:
        return Problem(
            chain,
            Kind.TAIL_TRUNCATION,
            f"the newest checkpoint is of {checkpoint.size} entries; "
            f"one of {seen.size} was verified before",
        )
    if checkpoint.size == seen.size:
        if checkpoint.root != seen.root:
            return Problem(
                chain,
                Kind.FORKED_HISTORY,
                f"two roots for {seen.size} entries: {_short(seen.root)} verified before, "
                f"{_short(checkpoint.root)} now",
            )
        return Unchanged(chain)
    return NeedProof(chain, seen.size, checkpoint.size, checkpoint, text)


def conclude(step: NeedProof, seen: Seen, proof: Sequence[bytes] | None, why: str = "") -> Step:
    """The chain's verdict once the log answered for PROOF(first, second); `proof` None:
    the log could not give one (`why` says what it answered)."""
    if proof is None:
        return Problem(
            step.chain,
            Kind.FORKED_HISTORY,
            f"the log cannot prove that its {step.second} entries extend the "
            f"{step.first} verified before ({why or 'no proof'})",
        )
    try:
        merkle.verify_consistency(step.first, step.second, seen.root, step.checkpoint.root, proof)
    except merkle.InvalidProof as exc:
        return Problem(
            step.chain,
            Kind.FORKED_HISTORY,
            f"the {step.second} entries do not extend the {step.first} verified before: {exc}",
        )
    return Accept(step.chain, Seen(step.second, step.checkpoint.root, step.note), step.first)


def gone(chain: int, seen: Seen, has_entries: bool | None) -> Problem:
    """A chain kept in the state has no checkpoint now; `has_entries` None: unknown."""
    if has_entries:
        return Problem(
            chain,
            Kind.DELETED_CHECKPOINTS,
            f"the chain has entries but no signed checkpoint; one of {seen.size} entries "
            "was verified before",
        )
    return Problem(
        chain,
        Kind.DELETED_CHAIN,
        f"the chain has no checkpoint{'' if has_entries is None else ' and no entries'}; "
        f"one of {seen.size} entries was verified before",
    )


def _short(root: bytes) -> str:
    return base64.b64encode(root).decode()[:12] + "…"


# --- the state file ------------------------------------------------------------------------


class BadState(ValueError):
    """A state file that is unreadable, altered, or kept for another log key."""


@dataclass(frozen=True)
class State:
    vkey: str
    chains: Mapping[int, Seen]

    def dump(self) -> str:
        chains = {
            str(chain): {
                "size": seen.size,
                "root": base64.b64encode(seen.root).decode(),
                "note": seen.note,
            }
            for chain, seen in sorted(self.chains.items())
        }
        return json.dumps({"format": FORMAT, "vkey": self.vkey, "chains": chains}, indent=1) + "\n"

    def with_accepted(self, accepted: Sequence[Accept]) -> State:
        chains = dict(self.chains)
        for a in accepted:
            chains[a.chain] = a.seen
        return State(self.vkey, chains)


def load_state(text: str, vkey: str) -> State:
    """The state a file holds, each kept note checked again with the key (a file altered
    by hand is refused rather than trusted)."""
    verifier = note.parse_vkey(vkey)
    if len(text) > MAX_STATE:
        raise BadState("the state file is too large to be a witness's")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise BadState("the state file is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"format", "vkey", "chains"}:
        raise BadState("the state file is not a carecoord witness's")
    if data["format"] != FORMAT or not isinstance(data["chains"], dict):
        raise BadState(f"the state file is not in the format {FORMAT}")
    if data["vkey"] != vkey:
        raise BadState(
            "the state file was kept for another log key: a rotated key must be confirmed "
            "by hand (move the old state away to start again)"
        )
    chains: dict[int, Seen] = {}
    for key, value in data["chains"].items():
        chain = _chain(key)
        seen = _seen(chain, value, verifier)
        chains[chain] = seen
    return State(vkey, chains)


def _chain(key: Any) -> int:
    if not isinstance(key, str) or not key.isascii() or not key.isdigit() or len(key) > 10:
        raise BadState("the state file names a chain that is not a number")
    return int(key)


def _seen(chain: int, value: Any, verifier: Verifier) -> Seen:
    if not isinstance(value, dict) or set(value) != {"size", "root", "note"}:
        raise BadState(f"the state of chain {chain} is not size, root and note")
    text = value["note"]
    if not isinstance(text, str):
        raise BadState(f"the state of chain {chain} has no note")
    checkpoint = open_checkpoint(chain, text, verifier)
    if isinstance(checkpoint, Problem):
        raise BadState(f"the kept note of chain {chain}: {checkpoint.why}")
    try:
        root = base64.b64decode(str(value["root"]), validate=True)
    except binascii.Error:
        root = b""
    if value["size"] != checkpoint.size or root != checkpoint.root:
        raise BadState(f"the kept size or root of chain {chain} is not its note's")
    return Seen(checkpoint.size, checkpoint.root, text)
