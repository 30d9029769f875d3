"""An anchor as a file: the signed head of the log at one moment, and how it is read back.

The file is JSON: ``{"anchor": {...}, "signature": "..."}``. The signature is Ed25519 over the
``anchor`` object's canonical JSON (sorted keys, no spaces, ASCII). The object holds the
tree's size and root (RFC 9162 §2.1.1, over the rows in the log's global order), the roots of
its perfect subtrees left to right (its compact range, from which the next anchor goes on and
by which a check tells where a log parts from it), the leaf hash of the log's first row (an
anchor of another database's log begins elsewhere), the size and root of the anchor it was
built on, the highest log row id it covers, its time, and the signing key's id.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .keys import key_id
from .merkle import CompactRange

FORMAT = "ueoz-migration log anchor 1"
FILE_PATTERN = "anchor-*.json"
# No anchor is anywhere near this (a compact range holds at most 64 hashes); a larger file
# is not read into memory to find that out.
MAX_FILE_BYTES = 64 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


class AnchorRefused(ValueError):
    """The file is not an anchor this key signed; the message says why, in one line."""


@dataclass(frozen=True)
class Anchor:
    """The head of the log at one moment, as signed."""

    taken_at: datetime
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    first_row: bytes | None
    previous: tuple[int, bytes] | None
    last_log_id: int
    key: str

    @property
    def file_name(self) -> str:
        return f"anchor-{self.taken_at:%Y%m%dT%H%M%SZ}-{self.size}.json"

    @property
    def compact_range(self) -> CompactRange:
        return CompactRange(self.size, self.frontier)

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "taken_at": self.taken_at.strftime(_TIME),
            "size": self.size,
            "root": self.root.hex(),
            "frontier": [node.hex() for node in self.frontier],
            "first_row": self.first_row.hex() if self.first_row is not None else None,
            "previous": (
                {"size": self.previous[0], "root": self.previous[1].hex()}
                if self.previous is not None
                else None
            ),
            "last_log_id": self.last_log_id,
            "key": self.key,
        }


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_document(anchor: Anchor, key: Ed25519PrivateKey) -> str:
    """The anchor's file: its body and the signature over the body's canonical JSON."""
    signature = base64.b64encode(key.sign(_canonical(anchor.body()))).decode("ascii")
    return json.dumps({"anchor": anchor.body(), "signature": signature}, indent=2) + "\n"


def read_document(text: str, key: Ed25519PublicKey) -> Anchor:
    """The anchor in ``text``, once its signature holds with ``key``; AnchorRefused if not."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise AnchorRefused("not an anchor file (not JSON)") from None
    if not isinstance(document, dict) or set(document) != {"anchor", "signature"}:
        raise AnchorRefused("not an anchor file (no anchor and signature)")
    body, signature = document["anchor"], document["signature"]
    anchor = _parse(body)
    ours = key_id(key)
    if anchor.key != ours:
        raise AnchorRefused(
            f"signed with another key ({anchor.key[:16]}…), not the anchor key ({ours[:16]}…)"
        )
    try:
        key.verify(base64.b64decode(signature, validate=True), _canonical(body))
    except (InvalidSignature, binascii.Error, TypeError, ValueError):
        raise AnchorRefused(
            "its signature does not hold: the file was altered, or forged"
        ) from None
    return anchor


def _parse(body: Any) -> Anchor:
    """The anchor a body describes; AnchorRefused naming the first field that is not right."""

    def refuse(field: str) -> AnchorRefused:
        return AnchorRefused(f"not an anchor file ({field} is missing or not as written)")

    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise refuse("format")
    size, last = body.get("size"), body.get("last_log_id")
    if type(size) is not int or size < 0:
        raise refuse("size")
    if type(last) is not int or last < 0:
        raise refuse("last_log_id")
    try:
        taken_at = datetime.strptime(body.get("taken_at"), _TIME).replace(tzinfo=UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise refuse("taken_at") from None
    root = _digest(body.get("root"), refuse("root"))
    frontier = body.get("frontier")
    if not isinstance(frontier, list):
        raise refuse("frontier")
    nodes = tuple(_digest(node, refuse("frontier")) for node in frontier)
    try:
        compact = CompactRange(size, nodes)
    except ValueError:
        raise refuse("frontier") from None
    if compact.root() != root:
        raise AnchorRefused("not an anchor file (its frontier does not give its root)")
    first = body.get("first_row")
    first_row = None if first is None and size == 0 else _digest(first, refuse("first_row"))
    previous = body.get("previous")
    if previous is None:
        before = None
    elif (
        isinstance(previous, dict)
        and set(previous) == {"size", "root"}
        and type(previous["size"]) is int
        and 0 <= previous["size"] <= size
    ):
        before = (previous["size"], _digest(previous["root"], refuse("previous")))
    else:
        raise refuse("previous")
    key = body.get("key")
    if not isinstance(key, str) or not _HEX.fullmatch(key):
        raise refuse("key")
    return Anchor(taken_at, size, root, nodes, first_row, before, last, key)


def _digest(value: Any, refusal: AnchorRefused) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise refusal
    return bytes.fromhex(value)


def write_anchor(directory: Path, name: str, document: str) -> Path:
    """Write the anchor's file into ``directory``; never over one that is there.

    FileExistsError when a file of that name is there; OSError when it cannot be written.
    """
    path = directory / name
    with path.open("x", encoding="ascii") as out:
        out.write(document)
        out.flush()
        os.fsync(out.fileno())
    return path


def read_anchors(
    directory: Path, key: Ed25519PublicKey
) -> tuple[list[tuple[str, Anchor]], list[tuple[str, str]]]:
    """The anchors in ``directory`` whose signature holds, in the order of their sizes and
    times; and the files refused, each with its reason."""
    anchors, refused = [], []
    for path in sorted(directory.glob(FILE_PATTERN)):
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise AnchorRefused("not an anchor file (far too large)")
            anchors.append((path.name, read_document(path.read_text(encoding="utf-8"), key)))
        except AnchorRefused as refusal:
            refused.append((path.name, str(refusal)))
        except UnicodeDecodeError:
            refused.append((path.name, "not an anchor file (not UTF-8 text)"))
        except OSError as error:
            refused.append((path.name, f"cannot be read: {error.strerror or error}"))
    anchors.sort(key=lambda named: (named[1].size, named[1].taken_at, named[0]))
    return anchors, refused
