"""Verifying the audit log: every chain link, every ciphertext's tag, every index column
against its record, and every checkpoint's signature and hash. Pure: fed the entries
(chain by chain, in sequence order) and the checkpoints, it names the first bad one."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import chain as chains
from services.audit import cipher
from services.audit.keys import LogKeys, public_key_id
from services.audit.store import Checkpoint, Entry, entry_row


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
        keys: LogKeys,
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
        self._openers: dict[str, Callable[[bytes, bytes], bytes]] = {}
        self._patient_ix = cipher.blinder(keys.index_key, "patient")
        self._actor_ix = cipher.blinder(keys.index_key, "actor")

    def expect_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Say which entries checkpoints name, before feeding, so their hashes are kept."""
        for cp in checkpoints:
            self._checkpointed.setdefault(cp.chain, set()).add(cp.seq)

    def feed(self, entry: Entry) -> None:
        self.feed_rows((entry_row(entry),))

    def feed_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Feed entries as stored rows (the columns of ENTRY_COLUMNS, in that order), as
        feed() does entries: the loop that checks a whole log, so it looks nothing up twice."""
        states = self._chains
        checkpointed = self._checkpointed
        unsigned_before = self._unsigned_before
        problems = self._problems
        content = self._content_problem
        current: int | None = None
        state = _Chain()
        marks: Container[int] = ()
        checked = 0
        for at, chain, seq, record_id, key_id, blob, prev_hash, digest, *indexes in rows:
            checked += 1
            if chain != current:
                current = chain
                state = states.setdefault(chain, _Chain())
                marks = checkpointed.get(chain, ())
            if seq == state.expected and prev_hash == state.prev:
                what = content(chain, seq, at, record_id, key_id, blob, prev_hash, digest, indexes)
                if what is not None:
                    problems.append(Problem(chain, seq, what))
            else:
                problems.append(self._link(state, chain, seq))
            if seq in marks:
                state.marked[seq] = digest
            if unsigned_before is not None and at < unsigned_before:
                state.old.append(seq)
            # Go on from this entry, so one bad entry is reported once, not at every later one.
            if seq >= state.expected:
                state.expected = seq + 1
            state.prev = digest
            if seq > state.last:
                state.last = seq
        self._checked += checked

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

    def _link(self, state: _Chain, chain: int, seq: int) -> Problem:
        """What is wrong with an entry that does not follow the chain's last one."""
        here = f"{chain}:{seq}"
        if seq < state.expected:
            after = f"{chain}:{state.last}"
            what = f"entry {here} is out of order or repeated (it comes after {after})"
            return Problem(chain, seq, what)
        if seq > state.expected:
            # The first missing entry is the bad one: name it, not the one after the gap.
            gap = f"{chain}:{state.expected}"
            if seq > state.expected + 1:
                gap += f" to {chain}:{seq - 1}"
            what = f"entry {gap} is missing (removed): the chain jumps to {here}"
            return Problem(chain, state.expected, what)
        what = (
            f"entry {here} does not follow {chain}:{seq - 1}: "
            "an entry was removed, reordered or changed"
        )
        return Problem(chain, seq, what)

    def _content_problem(
        self,
        chain: int,
        seq: int,
        at: datetime,
        record_id: str,
        key_id: str,
        blob: bytes,
        prev_hash: bytes,
        digest: bytes,
        indexes: Sequence[Any],
    ) -> str | None:
        """What is wrong with an entry's hash, ciphertext or index columns (None: nothing).
        `indexes`: its patient_ix, actor_ix, outcome, purpose and sensitivity."""
        if chains.entry_hash(chain, seq, prev_hash, key_id, blob) != digest:
            return f"entry {chain}:{seq} was changed: its hash does not match its content"
        open_blob = self._openers.get(key_id)
        if open_blob is None:
            open_blob = self._openers[key_id] = cipher.opener(self._keys, key_id)
        try:
            record = orjson.loads(open_blob(blob, cipher.place(chain, seq, record_id)))
        except (cipher.Undecryptable, orjson.JSONDecodeError) as exc:
            return f"entry {chain}:{seq} was changed: {exc}"
        if not isinstance(record, dict):
            return f"entry {chain}:{seq} was changed: its index columns do not match its record"
        patient_ix, actor_ix, outcome, purpose, sensitivity = indexes
        patient = record.get("patient_id")
        stamp = record.get("at")
        try:
            same_instant = isinstance(stamp, str) and datetime.fromisoformat(stamp) == at
        except ValueError:
            same_instant = False
        if not (
            record.get("record_id") == record_id
            and record.get("outcome") == outcome
            and record.get("purpose") == purpose
            and tuple(record.get("sensitivity") or ()) == tuple(sensitivity)
            and (self._patient_ix(str(patient)) if patient else None) == patient_ix
            and self._actor_ix(str(record.get("actor_id"))) == actor_ix
            and same_instant
        ):
            return f"entry {chain}:{seq} was changed: its index columns do not match its record"
        return None

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
