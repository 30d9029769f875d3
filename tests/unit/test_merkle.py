"""The anchors' Merkle tree against RFC 9162's own definitions and known answers.

The reference functions below are §2.1.1 (MTH) and §2.1.4.1 (PROOF, SUBPROOF) as the RFC
writes them, recursing over lists of leaves; the known answers are those of
transparency-dev/merkle (Apache 2.0), the Go library Certificate Transparency logs run on:
``testonly/constants.go`` (leaves and roots) and ``testdata/consistency/*/happy-path.json``.
"""

from __future__ import annotations

import hashlib

import pytest

from ueoz_migration.anchors.merkle import (
    EMPTY_ROOT,
    CompactRange,
    Tree,
    leaf_hash,
    verify_consistency,
)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:]))


def reference_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    return reference_subproof(m, leaves, True)


def reference_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [reference_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*reference_subproof(m, leaves[:k], b), reference_mth(leaves[k:])]
    return [*reference_subproof(m - k, leaves[k:], False), reference_mth(leaves[:k])]


# transparency-dev/merkle testonly.LeafInputs() and RootHashes().
LEAF_INPUTS = [
    bytes.fromhex(value)
    for value in (
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
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# testdata/consistency/{1,2,3,4}/happy-path.json: size1, size2 and the proof.
PROOFS = [
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


def known_tree() -> Tree:
    return Tree([leaf_hash(leaf) for leaf in LEAF_INPUTS])


def test_roots_are_the_known_answers_for_every_size():
    tree = known_tree()
    compact = CompactRange()

    assert EMPTY_ROOT.hex() == ROOTS[0] == compact.root().hex()
    for size in range(1, len(LEAF_INPUTS) + 1):
        compact.append(leaf_hash(LEAF_INPUTS[size - 1]))
        assert tree.root(size).hex() == ROOTS[size]
        assert compact.root().hex() == ROOTS[size]


@pytest.mark.parametrize(("m", "n", "proof"), PROOFS, ids=[f"{m}-{n}" for m, n, _ in PROOFS])
def test_consistency_proofs_are_the_known_answers_and_verify(m, n, proof):
    tree = known_tree()
    first, second = bytes.fromhex(ROOTS[m]), bytes.fromhex(ROOTS[n])

    made = tree.consistency_proof(m, n)

    assert [node.hex() for node in made] == proof
    assert verify_consistency(m, n, first, second, made)


def test_every_proof_up_to_70_leaves_is_the_rfcs_and_verifies_only_as_it_should():
    leaves = [f"row {index}".encode() for index in range(70)]
    tree = Tree([leaf_hash(leaf) for leaf in leaves])
    for n in range(1, 71):
        second = reference_mth(leaves[:n])
        assert tree.root(n) == second
        for m in range(1, n + 1):
            first = reference_mth(leaves[:m])
            proof = tree.consistency_proof(m, n)
            assert proof == reference_proof(m, leaves[:n])
            assert verify_consistency(m, n, first, second, proof)
            if m == n:
                continue
            # Any change to a root or to the proof fails it.
            other = sha256(b"other")
            assert not verify_consistency(m, n, other, second, proof)
            assert not verify_consistency(m, n, first, other, proof)
            for index in range(len(proof)):
                bent = [*proof[:index], other, *proof[index + 1 :]]
                assert not verify_consistency(m, n, first, second, bent)
            assert not verify_consistency(m, n, first, second, proof[:-1])
            assert not verify_consistency(m, n, first, second, [*proof, other])


def test_a_tree_that_is_not_an_extension_fails_the_proof():
    leaves = [f"row {index}".encode() for index in range(20)]
    changed = [*leaves[:5], b"changed", *leaves[6:]]
    tree = Tree([leaf_hash(leaf) for leaf in changed])

    first = reference_mth(leaves[:9])

    assert not verify_consistency(9, 20, first, tree.root(), tree.consistency_proof(9))


def test_a_compact_range_goes_on_from_where_it_stopped():
    leaves = [leaf_hash(f"row {index}".encode()) for index in range(100)]
    tree = Tree(leaves)
    for size in range(101):
        kept, one_by_one = CompactRange(), CompactRange()
        kept.extend(leaves[:size])
        for leaf in leaves[:size]:
            one_by_one.append(leaf)
        for step in (1, 3, 64):  # on from there, in parts of several sizes
            resumed = CompactRange(kept.size, kept.hashes)
            for start in range(size, 100, step):
                resumed.extend(leaves[start : start + step])
            assert resumed.root() == tree.root()
        assert kept.root() == one_by_one.root() == tree.root(size)
        assert kept.hashes == one_by_one.hashes
        # Each kept hash is the root of the perfect subtree over its range.
        assert [tree.hash(start, end) for start, end in kept.ranges()] == kept.hashes


def test_a_compact_range_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="a tree of 3 leaves has 2 subtrees"):
        CompactRange(3, [EMPTY_ROOT])
