"""Check the log against its anchors (``audit verify --anchors DIR``).

The log's rows are read once, in their global order, and the tree over all of them is built
(merkle.Tree). For each anchor whose signature holds, a consistency proof (RFC 9162 §2.1.4)
from the anchor's size to today's must verify against the anchor's root and today's: the log
then still holds every row the anchor covered, unchanged and in the same order, and has only
grown since. Where it fails, the anchor's own subtrees, and the anchor it was built on, say
how far the log still agrees with it: the size at which they part.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from .document import FILE_PATTERN, Anchor, read_anchors
from .leaves import export_leaves, log_leaves
from .merkle import Tree, verify_consistency

# Problems listed in full; the rest are counted.
SHOWN = 20


class NoAnchors(ValueError):
    """The folder holds no anchor file: nothing would be checked."""


@dataclass(frozen=True)
class NotExtended:
    """An anchor the log no longer extends, and why."""

    name: str
    anchor: Anchor
    problem: str

    def __str__(self) -> str:
        return f"{self.name} ({self.anchor.size} rows, taken {_time(self.anchor)}): {self.problem}"


@dataclass
class AnchorReport:
    """What the check of a folder of anchors found."""

    directory: Path
    rows: int = 0
    anchors: int = 0
    seconds: float = 0.0
    latest: tuple[str, Anchor] | None = None
    not_extended: list[NotExtended] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_extended and not self.refused

    def lines(self) -> list[str]:
        """The report as the auditor reads it: the problems, then one summary line."""
        lines = []
        if self.not_extended:
            first, *others = self.not_extended
            lines.append(f"FIRST ANCHOR NOT EXTENDED: {first}")
            lines += [f"  also not extended: {other}" for other in others[: SHOWN - 1]]
            if len(others) >= SHOWN:
                lines.append(f"  … and {len(others) - SHOWN + 1} more anchor(s) not extended")
        lines += [f"ANCHOR REFUSED: {name}: {reason}" for name, reason in self.refused[:SHOWN]]
        if len(self.refused) > SHOWN:
            lines.append(f"  … and {len(self.refused) - SHOWN} more file(s) refused")
        timing = f"in {self.seconds:.3f} s"
        if self.ok:
            assert self.latest is not None
            name, latest = self.latest
            lines.append(
                f"anchors: OK; the log extends all {self.anchors} anchor(s) in {self.directory}, "
                f"the latest {name} ({latest.size} of its {self.rows} row(s), taken "
                f"{_time(latest)}); {timing}"
            )
        else:
            problems = len(self.not_extended) + len(self.refused)
            lines.append(
                f"anchors: {problems} of {self.anchors + len(self.refused)} anchor file(s) with "
                f"a problem ({len(self.not_extended)} not extended, {len(self.refused)} "
                f"refused); the log holds {self.rows} row(s); {timing}"
            )
        return lines


def _time(anchor: Anchor) -> str:
    return anchor.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_log(session: Session, directory: Path, key: Ed25519PublicKey) -> AnchorReport:
    """Check the anchors in ``directory`` against the log in the database."""
    return _check(directory, key, lambda: list(log_leaves(session)))


def check_export(lines: Iterable[str], directory: Path, key: Ed25519PublicKey) -> AnchorReport:
    """Check the anchors in ``directory`` against an ``audit export`` file, with no database.

    ExportUnreadable or NoRowIds when the file cannot be checked so.
    """
    return _check(directory, key, lambda: export_leaves(lines))


def _check(directory: Path, key: Ed25519PublicKey, read) -> AnchorReport:  # type: ignore[no-untyped-def]
    started = perf_counter()
    anchors, refused = read_anchors(directory, key)
    if not anchors and not refused:
        raise NoAnchors(f"{directory} holds no anchor ({FILE_PATTERN})")
    tree = Tree(read())
    report = AnchorReport(directory, rows=tree.size, anchors=len(anchors), refused=refused)
    root = tree.root()
    for name, anchor in anchors:
        problem = _departure(tree, root, anchor)
        if problem is not None:
            report.not_extended.append(NotExtended(name, anchor, problem))
    report.latest = anchors[-1] if anchors else None
    report.seconds = perf_counter() - started
    return report


def _departure(tree: Tree, root: bytes, anchor: Anchor) -> str | None:
    """None when the log extends the anchor; else how, and where, they part."""
    size, rows = anchor.size, tree.size
    if size == 0:
        return None
    if rows == 0 or tree.levels[0][0] != anchor.first_row:
        return (
            "it begins with another first row than this log: it was taken of another "
            "database's log, or the log's first row was changed or removed since"
        )
    if size <= rows and verify_consistency(
        size, rows, anchor.root, root, tree.consistency_proof(size)
    ):
        return None
    low, high = _parting(tree, anchor)
    where = f"its row {high}" if high == low + 1 else f"among its rows {low + 1}–{high}, one"
    kept = f"the log's first {low} row(s) are the ones it covered; " if low else ""
    problem = (
        f"the log no longer extends it: they part after size {low} ({kept}{where} was "
        "changed, removed, added or moved)"
    )
    if rows < size:
        problem += f"; the log holds {rows} row(s), fewer than the {size} it covered"
    return problem


def _parting(tree: Tree, anchor: Anchor) -> tuple[int, int]:
    """How many first rows the log still shares with the anchor, and where, at the latest,
    the first difference lies.

    The anchor's subtrees, left to right, agree up to the first that does not; and the anchor
    it was built on (its first rows, by the way the next is built) may agree further.
    """
    low, high = 0, anchor.size
    for (start, end), node in zip(anchor.compact_range.ranges(), anchor.frontier, strict=True):
        if end > tree.size or tree.hash(start, end) != node:
            high = end
            break
        low = end
    if anchor.previous is not None:
        before, before_root = anchor.previous
        if low < before <= tree.size and tree.root(before) == before_root:
            low = before
    if high <= low:
        high = anchor.size
    return low, high
