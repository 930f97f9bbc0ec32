"""The Merkle tree over each audit chain, as RFC 9162 (§2.1) defines it: pure functions.

A chain's entries are the leaves, in sequence order (leaf index = seq - 1); a leaf's data
is the entry's hash. The tree is stored as its complete subtrees: node (level, index)
is the hash of leaves [index * 2**level, (index + 1) * 2**level), level 0 being the leaf
hashes. Every proof element is either one stored node or the fold of a few (the right
edge of a tree whose size is not a power of two), so a proof costs one indexed read of
at most 2·log2(n) rows, whatever the tree's size.

pymerkle (7.0) hashes the same way but proves in its own format (a rule and a path) and
computes subtree roots from the leaves; it is used by the tests as an independent check
of the roots, not here. The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step
and refuse anything not exactly of the expected shape (element sizes, proof lengths).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Larger trees are refused on verification: a size is a uint64 in RFC 9162.
MAX_SIZE = 1 << 63

Node = tuple[int, int]  # (level, index) of a complete subtree


class InvalidProof(ValueError):
    """A proof that does not verify; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- which stored nodes a hash needs ---------------------------------------------------


def range_nodes(begin: int, end: int) -> list[Node]:
    """The complete subtrees whose fold is MTH(D[begin:end]), left to right, for a range
    that is a subtree of the RFC's recursion: `begin` a multiple of the smallest power of
    two not below `end - begin` (every range a proof asks for is)."""
    nodes: list[Node] = []
    while begin < end:
        size = end - begin
        level = size.bit_length() - 1
        if size == 1 << level:
            nodes.append((level, begin >> level))
            break
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees' hashes (range_nodes order)."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make PATH(index, D[0:size]), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _split(end - begin)
        if index < begin + k:
            out.append((begin + k, end))
            end = begin + k
        else:
            out.append((begin, begin + k))
            begin += k
    return out[::-1]


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make PROOF(first, D[0:second]) (RFC 9162 §2.1.4.1)."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    out: list[tuple[int, int]] = []
    begin, end, m, whole = 0, second, first, True
    while m != end - begin:
        k = _split(end - begin)
        if m <= k:
            out.append((begin + k, end))
            end = begin + k
        else:
            out.append((begin, begin + k))
            begin, m, whole = begin + k, m - k, False
    if not whole:
        out.append((begin, end))
    return out[::-1]


def root_ranges(size: int) -> list[Node]:
    """The stored nodes whose fold is the root of a tree of `size` leaves."""
    return range_nodes(0, size)


# --- building nodes as leaves are appended ---------------------------------------------


def new_nodes(
    size: int, frontier: Sequence[bytes], leaves: Sequence[bytes]
) -> list[tuple[int, int, bytes]]:
    """The complete-subtree nodes (level, index, hash) that appending `leaves` (leaf data,
    i.e. entry hashes) to a tree of `size` leaves creates, leaf hashes included.
    `frontier` holds the hashes of root_ranges(size), left to right."""
    stack = list(zip((lvl for lvl, _ in root_ranges(size)), frontier, strict=True))
    out: list[tuple[int, int, bytes]] = []
    n = size
    for data in leaves:
        h = leaf_hash(data)
        out.append((0, n, h))
        level, index = 0, n
        while stack and stack[-1][0] == level:
            _, left = stack.pop()
            h = node_hash(left, h)
            level, index = level + 1, index >> 1
            out.append((level, index, h))
        stack.append((level, h))
        n += 1
    return out


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf data (a whole tree in memory: tests and small exports)."""
    nodes = new_nodes(0, (), leaves)
    by_node = {(lvl, idx): h for lvl, idx, h in nodes}
    return fold([by_node[n] for n in root_ranges(len(leaves))])


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) --------------------------------------


def _check_elements(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if not isinstance(p, bytes) or len(p) != HASH_SIZE:
            raise InvalidProof(f"proof element {i} is not a {HASH_SIZE}-byte hash")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` makes for the leaf hash `leaf` at `index` of a tree of `size`."""
    if not 0 <= index < size <= MAX_SIZE:
        raise InvalidProof(f"leaf index {index} is not in a tree of {size}")
    if len(leaf) != HASH_SIZE:
        raise InvalidProof("the leaf hash is not 32 bytes")
    _check_elements(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidProof("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("the proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Raise InvalidProof unless `proof` shows leaf hash `leaf` at `index` of the tree of
    `size` leaves whose root is `root_hash`."""
    if not hmac.compare_digest(root_from_inclusion(index, size, leaf, proof), root_hash):
        raise InvalidProof("the proof leads to another root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise InvalidProof unless the tree of `second` leaves with root `second_root`
    extends the tree of `first` leaves with root `first_root`."""
    if not 0 <= first <= second <= MAX_SIZE:
        raise InvalidProof(f"no consistency from a tree of {first} to one of {second}")
    _check_elements(proof)
    if first == second:
        if proof:
            raise InvalidProof("a proof between equal sizes must be empty")
        if not hmac.compare_digest(first_root, second_root):
            raise InvalidProof("two different roots for one size: a forked history")
        return
    if first == 0:
        if proof:
            raise InvalidProof("a proof from the empty tree must be empty")
        return
    if not proof:
        raise InvalidProof("the proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("the proof is longer than the trees need")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("the proof is shorter than the trees need")
    if not hmac.compare_digest(fr, first_root):
        raise InvalidProof("the proof does not lead to the earlier root")
    if not hmac.compare_digest(sr, second_root):
        raise InvalidProof("the proof does not lead to the later root")


# --- proving a set of leaves at once (an archived month) --------------------------------


def _gap_node(pos: int, end: int) -> Node:
    """The largest complete subtree that starts at `pos` and ends by `end`."""
    level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length() - 1
    while (1 << level) > end - pos:
        level -= 1
    return level, pos >> level


def cover(size: int, indices: Sequence[int]) -> list[Node]:
    """The complete subtrees that, beside the leaves at `indices` (sorted, distinct), make
    up a tree of `size` leaves: what a verifier holding only those leaves needs to rebuild
    the root. Each gap between them takes at most 2·log2(size) nodes."""
    out: list[Node] = []
    pos = 0
    for index in [*indices, size]:
        if not pos <= index <= size:
            raise ValueError("the leaf indices are not sorted, distinct and inside the tree")
        while pos < index:
            level, i = _gap_node(pos, index)
            out.append((level, i))
            pos += 1 << level
        pos = index + 1
    return out


def root_from_cover(size: int, leaves: dict[int, bytes], nodes: dict[Node, bytes]) -> bytes:
    """The root of a tree of `size` leaves from some of its leaf hashes (by index) and the
    `cover` nodes of the rest; InvalidProof if a node is missing, extra or not 32 bytes."""
    if not 0 < size <= MAX_SIZE or any(not 0 <= i < size for i in leaves):
        raise InvalidProof("a leaf index is outside the tree")
    _check_elements([*leaves.values(), *nodes.values()])
    stack: list[tuple[int, bytes]] = []

    def push(level: int, digest: bytes) -> None:
        while stack and stack[-1][0] == level:
            digest = node_hash(stack.pop()[1], digest)
            level += 1
        stack.append((level, digest))

    used = 0
    pos = 0
    for end in [*sorted(leaves), size]:
        while pos < end:
            level, index = _gap_node(pos, end)
            digest = nodes.get((level, index))
            if digest is None:
                raise InvalidProof(f"the node ({level}, {index}) of the tree is missing")
            push(level, digest)
            used += 1
            pos += 1 << level
        if end < size:
            push(0, leaves[end])
            pos = end + 1
    if used != len(nodes):
        raise InvalidProof("the proof holds nodes the tree does not need")
    return fold([d for _, d in stack])
