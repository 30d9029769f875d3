"""The Merkle tree of RFC 9162 (Certificate Transparency 2.0, §2.1), SHA-256.

A leaf hashes as ``SHA-256(0x00 || leaf)``, an inner node as ``SHA-256(0x01 || left ||
right)``, and a tree of ``n`` leaves splits at ``k``, the largest power of two smaller than
``n``. The empty tree's hash is ``SHA-256()``. A consistency proof (§2.1.4) shows that the tree
of the first ``m`` leaves is a prefix of the tree of ``n``.

Written here rather than taken from a library: the anchors need the RFC's own proofs (a list
of node hashes, checked with §2.1.4.2's algorithm, so that any Certificate Transparency tool
can check them), and a compact range that is kept between runs so that anchoring hashes only
the rows added since. pymerkle, the maintained Python library, builds the RFC's tree but
proves consistency in a format of its own and keeps every leaf in its own store, with no way
to resume from a compact range. tests/unit/test_merkle.py holds this module to the RFC's
recursive definitions and to transparency-dev/merkle's known answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2): where the RFC splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_sizes(n: int) -> list[int]:
    """The sizes of the perfect subtrees that make up a tree of ``n`` leaves, left to right."""
    return [1 << bit for bit in range(n.bit_length() - 1, -1, -1) if n >> bit & 1]


class CompactRange:
    """The roots of the perfect subtrees covering leaves ``[0, size)``, left to right.

    Enough to compute the tree's root and to go on appending leaves without the leaves before:
    what an anchor keeps so that the next one hashes only the rows added since.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} subtrees")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Append a leaf hash, merging the subtrees it completes."""
        self._append_subtree(leaf, 0)

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append leaf hashes: in the largest perfect subtrees that fit, each hashed level by
        level (a pass over a list costs far less than a call per leaf)."""
        start, count = 0, len(leaves)
        while start < count:
            # The largest power of two that fits both what is left and the current size's
            # alignment (its lowest set bit), so that the subtree lands on its own place.
            height = (count - start).bit_length() - 1
            if self.size:
                height = min(height, (self.size & -self.size).bit_length() - 1)
            level = list(leaves[start : start + (1 << height)])
            while len(level) > 1:
                pairs = iter(level)
                level = [node_hash(left, right) for left, right in zip(pairs, pairs, strict=True)]
            self._append_subtree(level[0], height)
            start += 1 << height

    def _append_subtree(self, node: bytes, height: int) -> None:
        # Each trailing 1 bit of the size counted in subtrees of this height is one to merge.
        hashes = self.hashes
        size = self.size >> height
        while size & 1:
            node = node_hash(hashes.pop(), node)
            size >>= 1
        hashes.append(node)
        self.size += 1 << height

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def ranges(self) -> list[tuple[int, int]]:
        """Each subtree's leaves as ``(start, end)``, in the order of :attr:`hashes`."""
        spans, start = [], 0
        for size in subtree_sizes(self.size):
            spans.append((start, start + size))
            start += size
        return spans


class Tree:
    """Every node of a tree built from its leaf hashes: roots and proofs for any size up to it.

    ``levels[h][i]`` is the root of the perfect subtree of leaves ``[i·2^h, (i+1)·2^h)``. Any
    prefix's root or proof then costs a few dozen hashes, so checking a hundred anchors
    against one log reads and hashes the log once.
    """

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels = [leaves]
        level = leaves
        while len(level) > 1:
            pairs = iter(level)
            level = [node_hash(left, right) for left, right in zip(pairs, pairs, strict=False)]
            self.levels.append(level)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range the RFC's splits produce (``start`` a multiple of a
        power of two at least as large as the range's left subtree)."""
        count = end - start
        if count == 0:
            return EMPTY_ROOT
        if count & (count - 1) == 0:
            height = count.bit_length() - 1
            return self.levels[height][start >> height]
        k = split(count)
        return node_hash(self.hash(start, start + k), self.hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        return self.hash(0, self.size if size is None else size)

    def consistency_proof(self, m: int, n: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 (0 < m < n ≤ size; empty for m = n)."""
        n = self.size if n is None else n
        if not 0 <= m <= n <= self.size:
            raise ValueError(f"no consistency proof from {m} to {n} in a tree of {self.size}")
        if m in (0, n):
            return []
        return self._subproof(m, 0, n, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        # SUBPROOF(m, D[start:end], b), the RFC's recursion with the leaves as a range.
        n = end - start
        if m == n:
            return [] if whole else [self.hash(start, end)]
        k = split(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, whole), self.hash(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self.hash(start, start + k)]


def verify_consistency(m: int, n: int, first: bytes, second: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` shows the tree of ``m`` leaves (root ``first``) is a prefix of the
    tree of ``n`` (root ``second``): RFC 9162 §2.1.4.2, step by step."""
    if m > n:
        return False
    if m == n:
        return not proof and first == second
    if m == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False  # step 1
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, first)  # step 2
    fn, sn = m - 1, n - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first and sr == second and sn == 0  # step 7
