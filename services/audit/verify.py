"""Verifying the audit log: every chain link, every ciphertext's tag, every index column
against its record, every stored Merkle tree node against the one the entries make, and
every checkpoint's signature, hash, signed note and root. Pure: fed the entries (chain by
chain, in sequence order), the tree's nodes (chain by chain, in the order appending makes
them) and the checkpoints, it names the first bad one."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from hashlib import sha256
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import chain as chains
from services.audit import cipher, merkle, note
from services.audit.keys import LogKeys, public_key_id
from services.audit.store import LOG_NAME, Checkpoint, Entry, entry_row, origin, signed_at_line

# A tree node in the order appending makes them: (chain, position, level), where position
# is the index of the leaf whose append completed it, ((idx + 1) << level) - 1 (so
# idx = ((position + 1) >> level) - 1).
_Key = tuple[int, int, int]

# Compared in bulk (Verifier(node_digests=True)), a chain's tree nodes come level by level
# in blocks of 2**BLOCK_BITS nodes by index: each block one SHA-256 over its nodes' hashes
# in index order, with the node count and first and last index (store.tree_node_digests),
# read in the order of the tree's primary key.
BLOCK_BITS = 16
_BLOCK = 1 << BLOCK_BITS
# A block's (node count, first index, last index, SHA-256 of the hashes), by (chain, level,
# block).
_Block = tuple[int, int, int, bytes]
_BlockKey = tuple[int, int, int]


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
    # The last entry's hash; None after an archived entry (its hash left with it: the
    # tree, checked against the signed roots, covers the link instead).
    prev: bytes | None = chains.GENESIS
    # Sequences of archived entries that checkpoints name.
    archived: set[int] = field(default_factory=set)
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
    # With node digests: per level, the hashes of the nodes of the block being made, and
    # how many blocks of that level are done; the blocks made, by (level, block).
    levels: list[list[bytes]] = field(default_factory=list)
    blocks_done: list[int] = field(default_factory=list)
    blocks: dict[tuple[int, int], _Block] = field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    """A verifier's findings over some chains (Verifier.part), for another to merge."""

    chains: dict[int, _Chain]
    problems: list[Problem]
    checked: int
    nodes_checked: int


class Verifier:
    """Feed entries in (chain, seq) order and the stored tree nodes in (chain, position,
    level) order, interleaved as you like (feed_nodes as many as nodes_pending() says after
    each feed_rows keeps both short), then call result(checkpoints)."""

    def __init__(
        self,
        keys: LogKeys,
        *,
        public_key: Ed25519PublicKey | None = None,
        unsigned_before: datetime | None = None,
        log_name: str = LOG_NAME,
        tree: bool = True,
        node_digests: bool = False,
    ) -> None:
        """`unsigned_before`: entries of accesses before this moment must be covered by a
        checkpoint (the writer signs every few seconds); None skips that check.
        `log_name`: the name the checkpoints' notes are signed under and their origins
        start with. `tree`: compare the stored tree nodes fed with the ones the entries
        make (False: the entries and checkpoints only). `node_digests`: compare them a
        block at a time, as digests (expect_node_digests), instead of node by node
        (feed_nodes); tree_differs() then says whether a block differs, and only a pass node
        by node can name the node."""
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
        self._digests = tree and node_digests
        # The stored blocks, by (chain, level, block): see _Block.
        self._stored_blocks: dict[_BlockKey, _Block] = {}
        self._tree_done = False
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
            if chain != current:
                current = chain
                state = states.setdefault(chain, _Chain())
                marks = checkpointed.get(chain, ())
            if at is None:  # an archived entry: only its leaf, as the tree keeps it
                self._archived(chain, state, seq, digest, seq in marks)
                continue
            checked += 1
            if seq == state.expected and (prev_hash == state.prev or state.prev is None):
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

    def _archived(self, chain: int, state: _Chain, seq: int, leaf: bytes, marked: bool) -> None:
        """An archived entry (audit_archives says which): its stored leaf hash grows the
        tree, so every node above it and every signed root is still checked; its content
        was checked when it was archived, and its bundle checks offline."""
        if seq != state.expected:
            self._problems.append(self._link(state, chain, seq))
        self._grow(chain, state, b"", leaf=leaf)
        if marked:
            state.archived.add(seq)
            state.roots[seq] = merkle.fold([h for _, h in state.frontier])
        state.expected = max(state.expected, seq + 1)
        state.prev = None
        state.last = max(state.last, seq)

    def _grow(self, chain: int, state: _Chain, digest: bytes, *, leaf: bytes | None = None) -> None:
        """Add an entry's hash (or an archived entry's leaf hash) as the chain tree's next
        leaf: the nodes it completes go to the queue of nodes to compare with the stored
        ones."""
        n = state.size
        # merkle.leaf_hash, inlined (this runs once per entry)
        h = sha256(b"\x00" + digest).digest() if leaf is None else leaf
        frontier = state.frontier
        level = 0
        if self._digests:
            levels = state.levels
            if not levels:
                levels.append([])
                state.blocks_done.append(0)
            levels[0].append(h)
            if len(levels[0]) == _BLOCK:
                self._close_block(state, 0)
            while frontier and frontier[-1][0] == level:
                h = sha256(b"\x01" + frontier.pop()[1] + h).digest()  # merkle.node_hash
                level += 1
                if level == len(levels):
                    levels.append([])
                    state.blocks_done.append(0)
                levels[level].append(h)
                if len(levels[level]) == _BLOCK:
                    self._close_block(state, level)
        else:
            keep = self._tree
            made = self._made
            if keep:
                made.append((chain, n, 0, h))
            while frontier and frontier[-1][0] == level:
                h = sha256(b"\x01" + frontier.pop()[1] + h).digest()  # merkle.node_hash
                level += 1
                if keep:
                    made.append((chain, n, level, h))
        frontier.append((level, h))
        state.size = n + 1

    @staticmethod
    def _close_block(state: _Chain, level: int) -> None:
        hashes = state.levels[level]
        if hashes:
            block = state.blocks_done[level]
            first = block << BLOCK_BITS
            digest = sha256(b"".join(hashes)).digest()
            state.blocks[(level, block)] = (len(hashes), first, first + len(hashes) - 1, digest)
            state.levels[level] = []
            state.blocks_done[level] = block + 1

    def expect_node_digests(self, rows: Iterable[Sequence[Any]]) -> None:
        """With node_digests: the stored tree's blocks as (chain, level, block, node count,
        first index, last index, digest) rows (store.tree_node_digests), to compare with the
        blocks the entries make."""
        for chain, level, block, count, first, last, digest in rows:
            self._stored_blocks[(chain, level, block)] = (count, first, last, bytes(digest))

    def tree_differs(self) -> bool:
        """With node_digests, once every entry is fed: whether any stored block of tree nodes
        differs from the one the entries make (a pass node by node names the node)."""
        return bool(self._differing_blocks())

    def _differing_blocks(self) -> list[_BlockKey]:
        """The (chain, level, block)s whose stored nodes differ from the ones the entries
        make."""
        if not self._digests:
            return []
        made: dict[_BlockKey, _Block] = {}
        for chain, state in self._chains.items():
            for level in range(len(state.levels)):
                self._close_block(state, level)
            made.update(((chain, *key), done) for key, done in state.blocks.items())
        stored = self._stored_blocks
        return sorted(k for k in made.keys() | stored.keys() if made.get(k) != stored.get(k))

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

    def part(self) -> Part:
        """What result() needs from the entries fed here, with their tree compared: for a
        verifier that took some chains, to merge() into one that checks the checkpoints."""
        self._finish_tree()
        kept = {
            chain: replace(state, frontier=[], levels=[], blocks_done=[], blocks={})
            for chain, state in self._chains.items()
        }
        return Part(kept, list(self._problems), self._checked, self._nodes_checked)

    def merge(self, part: Part) -> None:
        """Take in another verifier's part() (chains this one was not fed)."""
        self._chains.update(part.chains)
        self._problems.extend(part.problems)
        self._checked += part.checked
        self._nodes_checked += part.nodes_checked

    def _finish_tree(self) -> None:
        """Compare what is left of the tree (once every entry and node is fed)."""
        if self._tree_done:
            return
        self._tree_done = True
        if self._digests:
            for chain, level, block in self._differing_blocks():
                if chain not in self._tree_bad:
                    self._tree_bad.add(chain)
                    # The entries whose appends made the block's nodes.
                    first = (block << (BLOCK_BITS + level)) + 1
                    span = f"{chain}:{first} to {chain}:{first + (_BLOCK << level) - 1}"
                    what = f"tree nodes (level {level}) of entries {span} differ from the stored"
                    self._problems.append(Problem(chain, first, what))
            if not self._tree_bad:
                self._nodes_checked += sum(b[0] for b in self._stored_blocks.values())
        else:
            self._compare_nodes(final=True)

    def result(self, checkpoints: Iterable[Checkpoint]) -> Verification:
        self._finish_tree()
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
        if cp.seq in state.archived:
            return None  # the entry left with its month; the note's root still covers it
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
