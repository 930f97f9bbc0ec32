"""Verifying the audit log: every chain link, every ciphertext's tag, every index column
against its record, every stored Merkle tree node against the one the entries make, and
every checkpoint's signature, hash, signed note and root. Pure: fed the entries (chain by
chain, in sequence order), the tree's nodes (chain by chain, in the order appending makes
them) and the checkpoints, it names the first bad one."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import chain as chains
from services.audit import cipher, merkle, note
from services.audit.keys import AuditKeys, public_key_id
from services.audit.store import LOG_NAME, Checkpoint, Entry, entry_row, origin, signed_at_line

# A tree node in the order appending makes them: (chain, position, level), where position
# is the index of the leaf whose append completed it, ((idx + 1) << level) - 1 (so
# idx = ((position + 1) >> level) - 1).
_Key = tuple[int, int, int]


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
    # Stored Merkle tree nodes found equal to the ones the entries make.
    nodes_checked: int = 0

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
    # The tree the entries make, as they are fed: its size, its frontier ((level, hash)
    # of the complete subtrees making its root, left to right), and its root at each size
    # a checkpoint names.
    size: int = 0
    frontier: list[tuple[int, bytes]] = field(default_factory=list)
    roots: dict[int, bytes] = field(default_factory=dict)


class Verifier:
    """Feed entries in (chain, seq) order and the stored tree nodes in (chain, position,
    level) order, interleaved as you like (feed_nodes as many as nodes_pending() says after
    each feed_rows keeps both short), then call result(checkpoints)."""

    def __init__(
        self,
        keys: AuditKeys,
        *,
        public_key: Ed25519PublicKey | None = None,
        unsigned_before: datetime | None = None,
        log_name: str = LOG_NAME,
        tree: bool = True,
    ) -> None:
        """`unsigned_before`: entries of accesses before this moment must be covered by a
        checkpoint (the writer signs every few seconds); None skips that check.
        `log_name`: the name the checkpoints' notes are signed under and their origins
        start with. `tree`: compare the stored tree nodes fed with the ones the entries
        make (False: the entries and checkpoints only)."""
        self._keys = keys
        self._public = public_key or keys.verify_key
        self._log_name = log_name
        self._notes = note.Verifier(log_name, self._public)
        # Tree nodes the entries make, not yet compared with a stored one, and stored
        # nodes not yet compared with one the entries make; both in _Key order.
        # (chain, position, level, hash) each; those before _made_at and _stored_at are done.
        self._made: list[tuple[int, int, int, bytes]] = []
        self._stored: list[tuple[Any, ...]] = []
        self._made_at = self._stored_at = 0
        self._nodes_checked = 0
        self._tree = tree
        # Chains a bad tree node was named in (only the first is).
        self._tree_bad: set[int] = set()
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
            self._grow(chain, state, digest)
            if seq in marks:
                state.marked[seq] = digest
                state.roots[seq] = merkle.fold([h for _, h in state.frontier])
            if unsigned_before is not None and at < unsigned_before:
                state.old.append(seq)
            # Go on from this entry, so one bad entry is reported once, not at every later one.
            if seq >= state.expected:
                state.expected = seq + 1
            state.prev = digest
            if seq > state.last:
                state.last = seq
        self._checked += checked

    def _grow(self, chain: int, state: _Chain, digest: bytes) -> None:
        """Add an entry's hash as the chain tree's next leaf: the nodes it completes go to
        the queue of nodes to compare with the stored ones."""
        n = state.size
        h = sha256(b"\x00" + digest).digest()  # merkle.leaf_hash, inlined: once an entry
        keep = self._tree
        made = self._made
        if keep:
            made.append((chain, n, 0, h))
        frontier = state.frontier
        level = 0
        while frontier and frontier[-1][0] == level:
            h = sha256(b"\x01" + frontier.pop()[1] + h).digest()  # merkle.node_hash
            level += 1
            if keep:
                made.append((chain, n, level, h))
        frontier.append((level, h))
        state.size = n + 1

    def nodes_pending(self) -> int:
        """How many nodes the entries fed so far made that no stored node was compared with."""
        return len(self._made) - self._made_at

    def feed_nodes(self, rows: Iterable[Sequence[Any]]) -> None:
        """Feed stored tree nodes as (chain, position, level, hash) rows, in that order,
        position being the index of the leaf whose append completed the node,
        ((idx + 1) << level) - 1."""
        self._stored.extend(tuple(r) for r in rows)
        self._compare_nodes()

    def _compare_nodes(self, *, final: bool = False) -> None:
        made, stored = self._made, self._stored
        i, j = self._made_at, self._stored_at
        if not self._tree:
            made.clear()
            stored.clear()
            self._made_at = self._stored_at = 0
            return
        # The usual case, all in order: one comparison of the two runs.
        k = min(len(made) - i, len(stored) - j)
        if made[i : i + k] == stored[j : j + k]:
            i, j = i + k, j + k
            self._nodes_checked += k
        while i < len(made) and j < len(stored):
            chain, position, level, digest = made[i]
            key = (chain, position, level)
            found = stored[j][:3]
            if found == key:
                i, j = i + 1, j + 1
                self._nodes_checked += 1
                if stored[j - 1][3] != digest:
                    self._tree_problem(key, "was changed: it is not the hash its entries make")
            elif found > key:  # the stored nodes are sorted: this one is not stored
                i += 1
                self._tree_problem(key, "is missing (removed, or the writer has not built it)")
            else:  # a stored node the entries do not make
                j += 1
                self._tree_problem(found, "does not belong to the chain's entries")
        if final:
            for chain, position, level, _ in made[i:]:
                self._tree_problem(
                    (chain, position, level),
                    "is missing (removed, or the writer has not built it)",
                )
            for chain, position, level, _ in stored[j:]:
                self._tree_problem(
                    (chain, position, level), "is beyond the chain's last entry (entries removed?)"
                )
            i, j = len(made), len(stored)
        # Drop what was compared (now and then, not at every call).
        if i > 4096 or i == len(made):
            del made[:i]
            i = 0
        if j > 4096 or j == len(stored):
            del stored[:j]
            j = 0
        self._made_at, self._stored_at = i, j

    def _tree_problem(self, key: _Key, what: str) -> None:
        """Name a bad tree node, by the entry whose append made it; only a chain's first."""
        chain, position, level = key
        if chain in self._tree_bad:
            return
        self._tree_bad.add(chain)
        idx = ((position + 1) >> level) - 1 if 0 <= level < 64 else -1
        first, last = idx << level, ((idx + 1) << level) - 1
        span = f"{chain}:{first + 1}" + (f" to {chain}:{last + 1}" if last > first else "")
        self._problems.append(
            Problem(chain, position + 1, f"tree node (level {level}, index {idx}) of {span} {what}")
        )

    def result(self, checkpoints: Iterable[Checkpoint]) -> Verification:
        self._compare_nodes(final=True)
        cps = list(checkpoints)
        previous: dict[int, bytes] = {}
        covered: dict[int, int] = {}
        noted: set[int] = set()
        for cp in sorted(cps, key=lambda c: (c.chain, c.seq)):
            prev = previous.get(cp.chain, chains.GENESIS)
            problem = self._checkpoint(cp, prev) or self._note(cp, cp.chain in noted)
            if problem:
                self._problems.append(Problem(cp.chain, cp.seq, problem))
            previous[cp.chain] = chains.checkpoint_digest(cp.signature)
            covered[cp.chain] = max(covered.get(cp.chain, 0), cp.seq)
            if cp.note is not None:
                noted.add(cp.chain)
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
            nodes_checked=self._nodes_checked,
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

    def _note(self, cp: Checkpoint, noted_before: bool) -> str | None:
        """What is wrong with a checkpoint's signed note and root (None: nothing). One
        signed before the tree existed has neither; once a chain's checkpoints carry
        notes, every later one must."""
        here = f"{cp.chain}:{cp.seq}"
        if cp.note is None:
            if cp.root is not None or noted_before:
                return f"checkpoint {here} lost its signed note: removed"
            return None
        try:
            signed = note.open_note(cp.note, self._notes)
        except note.BadNote as exc:
            return f"checkpoint {here}'s signed note does not verify: {exc}"
        if signed.origin != origin(self._log_name, cp.chain):
            return f"checkpoint {here}'s signed note is of another log or chain ({signed.origin})"
        if signed.size != cp.seq:
            return f"checkpoint {here}'s signed note is of another size ({signed.size})"
        if signed.extensions != (signed_at_line(cp.signed_at),):
            return f"checkpoint {here}'s signed note names another signing time"
        if cp.root != signed.root:
            return f"checkpoint {here}'s root is not the one its signed note states"
        if self._chains[cp.chain].roots.get(cp.seq) != signed.root:
            return (
                f"checkpoint {here}'s signed root is not the root of the chain's entries "
                f"1 to {cp.seq}: the log was rewritten"
            )
        return None
