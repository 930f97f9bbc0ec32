"""Verifying the audit log: every chain link, every ciphertext's tag, every index column
against its record, and every checkpoint's signature and hash. Pure: fed the entries
(chain by chain, in sequence order) and the checkpoints, it names the first bad one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import chain as chains
from services.audit import cipher
from services.audit.keys import AuditKeys, public_key_id
from services.audit.store import Checkpoint, Entry


@dataclass(frozen=True)
class Problem:
    chain: int
    seq: int
    what: str

    @property
    def label(self) -> str:
        return f"{self.chain}:{self.seq}"


@dataclass(frozen=True)
class Verification:
    entries_checked: int
    chains: int
    checkpoints_checked: int
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The problem earliest in the log (by chain, then sequence)."""
        return min(self.problems, key=lambda p: (p.chain, p.seq), default=None)


@dataclass
class _Chain:
    expected: int = 1
    prev: bytes = chains.GENESIS
    # Hashes of entries a checkpoint names, to compare once the chain is read.
    marked: dict[int, bytes] = field(default_factory=dict)
    last: int = 0
    # Sequences of entries old enough that a checkpoint must cover them.
    old: list[int] = field(default_factory=list)


class Verifier:
    """Feed entries in (chain, seq) order, then call result(checkpoints)."""

    def __init__(
        self,
        keys: AuditKeys,
        *,
        public_key: Ed25519PublicKey | None = None,
        unsigned_before: datetime | None = None,
    ) -> None:
        """`unsigned_before`: entries of accesses before this moment must be covered by a
        checkpoint (the writer signs every few seconds); None skips that check."""
        self._keys = keys
        self._public = public_key or keys.verify_key
        self._unsigned_before = unsigned_before
        self._chains: dict[int, _Chain] = {}
        self._checkpointed: dict[int, set[int]] = {}
        self._problems: list[Problem] = []
        self._checked = 0

    def expect_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Say which entries checkpoints name, before feeding, so their hashes are kept."""
        for cp in checkpoints:
            self._checkpointed.setdefault(cp.chain, set()).add(cp.seq)

    def feed(self, entry: Entry) -> None:
        self._checked += 1
        state = self._chains.setdefault(entry.chain, _Chain())
        problem = self._link(state, entry) or self._content(entry)
        if problem:
            self._problems.append(problem)
        if entry.seq in self._checkpointed.get(entry.chain, ()):
            state.marked[entry.seq] = entry.hash
        if self._unsigned_before is not None and entry.at < self._unsigned_before:
            state.old.append(entry.seq)
        # Go on from this entry, so one bad entry is reported once, not at every later one.
        state.expected = max(state.expected, entry.seq + 1)
        state.prev = entry.hash
        state.last = max(state.last, entry.seq)

    def result(self, checkpoints: Iterable[Checkpoint]) -> Verification:
        cps = list(checkpoints)
        previous: dict[int, bytes] = {}
        covered: dict[int, int] = {}
        for cp in sorted(cps, key=lambda c: (c.chain, c.seq)):
            prev = previous.get(cp.chain, chains.GENESIS)
            problem = self._checkpoint(cp, prev)
            if problem:
                self._problems.append(Problem(cp.chain, cp.seq, problem))
            previous[cp.chain] = chains.checkpoint_digest(cp.signature)
            covered[cp.chain] = max(covered.get(cp.chain, 0), cp.seq)
        for chain, state in self._chains.items():
            unsigned = [seq for seq in state.old if seq > covered.get(chain, 0)]
            if unsigned:
                what = (
                    f"entries from {chain}:{unsigned[0]} on are older than the checkpoint "
                    "interval allows, yet no checkpoint covers them: checkpoints were removed, "
                    "or the audit writer has not been signing"
                )
                self._problems.append(Problem(chain, unsigned[0], what))
        return Verification(
            entries_checked=self._checked,
            chains=len(self._chains),
            checkpoints_checked=len(cps),
            problems=tuple(self._problems),
        )

    def _link(self, state: _Chain, entry: Entry) -> Problem | None:
        here = f"{entry.chain}:{entry.seq}"
        if entry.seq < state.expected:
            after = f"{entry.chain}:{state.last}"
            what = f"entry {here} is out of order or repeated (it comes after {after})"
            return Problem(entry.chain, entry.seq, what)
        if entry.seq > state.expected:
            # The first missing entry is the bad one: name it, not the one after the gap.
            gap = f"{entry.chain}:{state.expected}"
            if entry.seq > state.expected + 1:
                gap += f" to {entry.chain}:{entry.seq - 1}"
            what = f"entry {gap} is missing (removed): the chain jumps to {here}"
            return Problem(entry.chain, state.expected, what)
        if entry.prev_hash != state.prev:
            what = (
                f"entry {here} does not follow {entry.chain}:{entry.seq - 1}: "
                "an entry was removed, reordered or changed"
            )
            return Problem(entry.chain, entry.seq, what)
        return None

    def _content(self, entry: Entry) -> Problem | None:
        problem = self._content_problem(entry)
        return None if problem is None else Problem(entry.chain, entry.seq, problem)

    def _content_problem(self, entry: Entry) -> str | None:
        here = f"{entry.chain}:{entry.seq}"
        computed = chains.entry_hash(
            entry.chain, entry.seq, entry.prev_hash, entry.key_id, entry.ciphertext
        )
        if computed != entry.hash:
            return f"entry {here} was changed: its hash does not match its content"
        try:
            at = cipher.place(entry.chain, entry.seq, entry.record_id)
            plain = cipher.decrypt(self._keys, entry.key_id, entry.ciphertext, at=at)
            record = orjson.loads(plain)
        except (cipher.Undecryptable, orjson.JSONDecodeError) as exc:
            return f"entry {here} was changed: {exc}"
        if not isinstance(record, dict) or not self._indexes_match(entry, record):
            return f"entry {here} was changed: its index columns do not match its record"
        return None

    def _indexes_match(self, entry: Entry, record: dict[str, Any]) -> bool:
        patient = record.get("patient_id")
        patient_ix = cipher.blind(self._keys, "patient", str(patient)) if patient else None
        return (
            record.get("record_id") == entry.record_id
            and record.get("outcome") == entry.outcome
            and record.get("purpose") == entry.purpose
            and tuple(record.get("sensitivity") or ()) == entry.sensitivity
            and patient_ix == entry.patient_ix
            and cipher.blind(self._keys, "actor", str(record.get("actor_id"))) == entry.actor_ix
            and _same_instant(record.get("at"), entry)
        )

    def _checkpoint(self, cp: Checkpoint, prev: bytes) -> str | None:
        here = f"{cp.chain}:{cp.seq}"
        if cp.signing_key_id != public_key_id(self._public):
            return f"checkpoint {here} is signed by an unknown key ({cp.signing_key_id})"
        if not chains.checkpoint_signed(
            self._public, cp.chain, cp.seq, cp.hash, cp.signed_at, cp.signature, cp.prev_digest
        ):
            return f"checkpoint {here} has a bad signature: forged or altered"
        if cp.prev_digest != prev:
            return (
                f"checkpoint {here} does not follow the chain's previous checkpoint: "
                "a checkpoint was removed"
            )
        state = self._chains.get(cp.chain)
        if state is None or cp.seq > state.last:
            return f"checkpoint {here} names an entry that is missing: the chain was cut short"
        stored = state.marked.get(cp.seq)
        if stored is None:
            return f"checkpoint {here} names an entry that is missing (removed)"
        if stored != cp.hash:
            return f"checkpoint {here} no longer matches entry {here}: the log was rewritten"
        return None


def _same_instant(value: object, entry: Entry) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value) == entry.at
    except ValueError:
        return False
