"""The audit log's Merkle tree: RFC 6962/9162 test vectors, an independent implementation
(pymerkle) for the roots, and forged proofs that must all be refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from services.audit import merkle
from services.audit.merkle import InvalidProof


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# The RFC 6962 test data (as published with Certificate Transparency's reference
# implementations): eight leaf inputs, the roots of the trees of 1 to 8 leaves, and
# inclusion and consistency proofs between them.
LEAVES = [
    h(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    h(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf, 1-based; tree size; proof)
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


class Tree:
    """A tree kept as merkle.new_nodes makes it, with proofs assembled as the store does."""

    def __init__(self, leaves: list[bytes] = ()) -> None:  # type: ignore[assignment]
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0
        self.append(leaves)

    def append(self, leaves: list[bytes]) -> None:
        frontier = [self.nodes[n] for n in merkle.root_ranges(self.size)]
        for level, index, digest in merkle.new_nodes(self.size, frontier, leaves):
            assert (level, index) not in self.nodes
            self.nodes[(level, index)] = digest
        self.size += len(leaves)

    def hash_of(self, begin: int, end: int) -> bytes:
        return merkle.fold([self.nodes[n] for n in merkle.range_nodes(begin, end)])

    def root(self, size: int | None = None) -> bytes:
        return self.hash_of(0, self.size if size is None else size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return [self.hash_of(b, e) for b, e in merkle.inclusion_ranges(index, size)]

    def consistency(self, first: int, second: int) -> list[bytes]:
        return [self.hash_of(b, e) for b, e in merkle.consistency_ranges(first, second)]


def test_the_published_roots_of_trees_of_one_to_eight_leaves_are_ours() -> None:
    assert (
        merkle.EMPTY_ROOT.hex()
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for size in range(1, 9):
        assert merkle.root(LEAVES[:size]) == ROOTS[size - 1]
        assert Tree(LEAVES[:size]).root() == ROOTS[size - 1]


def test_the_tree_grown_a_leaf_at_a_time_has_every_earlier_root() -> None:
    tree = Tree()
    for leaf in LEAVES:
        tree.append([leaf])
    assert [tree.root(n) for n in range(1, 9)] == ROOTS


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_the_published_inclusion_proofs_are_ours_and_verify(
    leaf: int, size: int, proof: list[str]
) -> None:
    expected = [h(p) for p in proof]
    assert Tree(LEAVES).inclusion(leaf - 1, size) == expected
    merkle.verify_inclusion(
        leaf - 1, size, merkle.leaf_hash(LEAVES[leaf - 1]), expected, ROOTS[size - 1]
    )


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_the_published_consistency_proofs_are_ours_and_verify(
    first: int, second: int, proof: list[str]
) -> None:
    expected = [h(p) for p in proof]
    assert Tree(LEAVES).consistency(first, second) == expected
    merkle.verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], expected)


def forged_inclusions(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes):  # type: ignore[no-untyped-def]
    yield "leaf index - 1", index - 1, size, leaf, proof, root
    yield "leaf index + 1", index + 1, size, leaf, proof, root
    yield "leaf index ^ 2", index ^ 2, size, leaf, proof, root
    yield "tree size * 2", index, size * 2, leaf, proof, root
    yield "tree size / 2", index, size // 2, leaf, proof, root
    yield "another leaf", index, size, hashlib.sha256(b"WrongLeaf").digest(), proof, root
    yield "empty root", index, size, leaf, proof, merkle.EMPTY_ROOT
    yield "random root", index, size, leaf, proof, SOME_HASH
    yield "trailing garbage", index, size, leaf, [*proof, b""], root
    yield "trailing root", index, size, leaf, [*proof, root], root
    yield "preceding garbage", index, size, leaf, [b"", *proof], root
    yield "preceding root", index, size, leaf, [root, *proof], root
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        yield f"proof[{i}] with a bit flipped", index, size, leaf, flipped, root
    if proof:
        yield "shortened path", index, size, leaf, proof[:-1], root
    if len(proof) > 1:
        yield "inserted element", index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_every_forged_inclusion_proof_is_refused(leaf: int, size: int, proof: list[str]) -> None:
    good = [h(p) for p in proof]
    accepted = []
    for what, *args in forged_inclusions(
        leaf - 1, size, merkle.leaf_hash(LEAVES[leaf - 1]), good, ROOTS[size - 1]
    ):
        try:
            merkle.verify_inclusion(*args)
        except InvalidProof:
            continue
        accepted.append(what)
    assert accepted == []


def forged_consistencies(first: int, second: int, root1: bytes, root2: bytes, proof: list[bytes]):  # type: ignore[no-untyped-def]
    yield "first - 1", first - 1, second, root1, root2, proof
    yield "first + 1", first + 1, second, root1, root2, proof
    yield "first ^ 2", first ^ 2, second, root1, root2, proof
    yield "second * 2", first, second * 2, root1, root2, proof
    yield "second / 2", first, second // 2, root1, root2, proof
    yield "wrong earlier root", first, second, SOME_HASH, root2, proof
    yield "wrong later root", first, second, root1, SOME_HASH, proof
    yield "swapped roots", first, second, root2, root1, proof
    yield "empty proof", first, second, root1, root2, []
    yield "trailing garbage", first, second, root1, root2, [*proof, b""]
    yield "trailing earlier root", first, second, root1, root2, [*proof, root1]
    yield "trailing later root", first, second, root1, root2, [*proof, root2]
    yield "preceding garbage", first, second, root1, root2, [b"", *proof]
    yield "preceding earlier root", first, second, root1, root2, [root1, *proof]
    yield "preceding later root", first, second, root1, root2, [root2, *proof]
    yield "preceding proof[0]", first, second, root1, root2, [proof[0], *proof]
    yield "shortened path", first, second, root1, root2, proof[:-1]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 16]) + proof[i][1:]
        yield f"proof[{i}] with a bit flipped", first, second, root1, root2, flipped


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_every_forged_consistency_proof_is_refused(
    first: int, second: int, proof: list[str]
) -> None:
    good = [h(p) for p in proof]
    accepted = []
    for what, *args in forged_consistencies(
        first, second, ROOTS[first - 1], ROOTS[second - 1], good
    ):
        try:
            merkle.verify_consistency(*args)
        except InvalidProof:
            continue
        accepted.append(what)
    assert accepted == []


def test_edge_sizes_follow_rfc_9162() -> None:
    one = merkle.leaf_hash(b"data")
    merkle.verify_inclusion(0, 1, one, [], one)
    for index, size in ((0, 0), (1, 0), (2, 1), (1, 1)):
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(index, size, SOME_HASH, [], merkle.EMPTY_ROOT)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(0, 1, b"", [], b"")
    merkle.verify_consistency(0, 0, SOME_HASH, SOME_HASH, [])
    merkle.verify_consistency(0, 1, SOME_HASH, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    refused = [
        (1, 1, ROOTS[0], ROOTS[1], []),  # one size, two roots: a fork
        (2, 1, ROOTS[1], ROOTS[0], []),  # a shrunken tree
        (1, 2, ROOTS[0], ROOTS[1], []),  # no proof
        (1, 1, ROOTS[0], ROOTS[0], [SOME_HASH]),  # a proof where none belongs
        (0, 1, ROOTS[0], ROOTS[0], [SOME_HASH]),
    ]
    for args in refused:
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(*args)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_any_tree_agrees_with_pymerkle_and_proves_every_leaf_and_every_growth(
    leaves: list[bytes], data: st.DataObject
) -> None:
    reference = InmemoryTree(algorithm="sha256")
    tree = Tree()
    cut = data.draw(st.integers(0, len(leaves)))
    tree.append(leaves[:cut])
    tree.append(leaves[cut:])
    for leaf in leaves:
        reference.append_entry(leaf)
    n = len(leaves)
    for size in range(1, n + 1):
        assert tree.root(size) == reference.get_root(size)
    index = data.draw(st.integers(0, n - 1))
    size = data.draw(st.integers(index + 1, n))
    merkle.verify_inclusion(
        index, size, merkle.leaf_hash(leaves[index]), tree.inclusion(index, size), tree.root(size)
    )
    first = data.draw(st.integers(1, n))
    merkle.verify_consistency(first, n, tree.root(first), tree.root(n), tree.consistency(first, n))
    # A proof for one leaf never proves another.
    if n > 1:
        other = (index + 1) % size if size > 1 else None
        if other is not None and leaves[other] != leaves[index]:
            with pytest.raises(InvalidProof):
                merkle.verify_inclusion(
                    other,
                    size,
                    merkle.leaf_hash(leaves[other]),
                    tree.inclusion(index, size),
                    tree.root(size),
                )


def test_a_proof_needs_at_most_two_nodes_per_level() -> None:
    n = 1_000_003
    for index in (0, 1, 500_000, n - 1):
        nodes = [
            node for b, e in merkle.inclusion_ranges(index, n) for node in merkle.range_nodes(b, e)
        ]
        assert len(nodes) <= 2 * n.bit_length()
    nodes = [
        node for b, e in merkle.consistency_ranges(777_777, n) for node in merkle.range_nodes(b, e)
    ]
    assert len(nodes) <= 2 * n.bit_length()


@given(st.integers(1, 300), st.data())
def test_any_set_of_leaves_rebuilds_the_root_from_its_cover_and_nothing_else_does(
    size: int, data: st.DataObject
) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    tree = Tree(leaves)
    kept = sorted(data.draw(st.sets(st.integers(0, size - 1), max_size=size)))
    needed = merkle.cover(size, kept)
    nodes = {n: tree.nodes[n] for n in needed}
    known = {i: merkle.leaf_hash(leaves[i]) for i in kept}
    assert merkle.root_from_cover(size, known, nodes) == tree.root()
    assert len(needed) <= (len(kept) + 1) * 2 * size.bit_length()
    if kept:
        # Another leaf's content, a leaf left out or claimed elsewhere: another root or refused.
        forged = dict(known)
        forged[kept[0]] = merkle.leaf_hash(b"forged")
        assert merkle.root_from_cover(size, forged, nodes) != tree.root()
        with pytest.raises(InvalidProof):
            merkle.root_from_cover(size, {i: h for i, h in known.items() if i != kept[0]}, nodes)
    if needed:
        with pytest.raises(InvalidProof):
            merkle.root_from_cover(size, known, dict(list(nodes.items())[1:]))
        with pytest.raises(InvalidProof):
            merkle.root_from_cover(size, known, {**nodes, (0, size + 5): SOME_HASH})
