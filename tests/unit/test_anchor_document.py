"""An anchor's file reads back as signed, and is refused, with its reason, when it is not."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ueoz_migration.anchors.document import Anchor, AnchorRefused, read_document, signed_document
from ueoz_migration.anchors.keys import key_id
from ueoz_migration.anchors.merkle import CompactRange, leaf_hash

KEY = Ed25519PrivateKey.generate()


def an_anchor(size=5, key=KEY):
    compact = CompactRange()
    compact.extend([leaf_hash(f"row {index}".encode()) for index in range(size)])
    return Anchor(
        taken_at=datetime(2026, 12, 8, 10, 15, tzinfo=UTC),
        size=size,
        root=compact.root(),
        frontier=tuple(compact.hashes),
        first_row=leaf_hash(b"row 0"),
        previous=(3, b"\x01" * 32),
        last_log_id=size + 2,
        key=key_id(key.public_key()),
    )


def edited(document, **changes):
    parsed = json.loads(document)
    parsed["anchor"].update(changes)
    return json.dumps(parsed)


def test_an_anchor_reads_back_as_it_was_signed():
    anchor = an_anchor()
    document = signed_document(anchor, KEY)

    assert read_document(document, KEY.public_key()) == anchor
    assert anchor.file_name == "anchor-20261208T101500Z-5.json"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"size": 4}, "not an anchor file (frontier is missing or not as written)"),
        ({"size": 6}, "its signature does not hold"),
        ({"root": "00" * 32}, "not an anchor file (its frontier does not give its root)"),
        ({"taken_at": "2026-12-08T10:16:00Z"}, "its signature does not hold"),
        ({"last_log_id": 8}, "its signature does not hold"),
        ({"previous": {"size": 9, "root": "00" * 32}}, "previous is missing"),
        ({"first_row": None}, "first_row is missing"),
        ({"size": True}, "size is missing"),
        ({"format": "something else"}, "format is missing"),
        ({"key": key_id(Ed25519PrivateKey.generate().public_key())}, "signed with another key"),
    ],
)
def test_an_anchor_changed_after_it_was_signed_is_refused(change, reason):
    document = edited(signed_document(an_anchor(), KEY), **change)

    with pytest.raises(AnchorRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_document(document, KEY.public_key())


def test_an_anchor_signed_by_another_key_is_refused_naming_both():
    forger = Ed25519PrivateKey.generate()
    document = signed_document(an_anchor(key=forger), forger)

    with pytest.raises(AnchorRefused) as refused:
        read_document(document, KEY.public_key())

    assert str(refused.value) == (
        f"signed with another key ({key_id(forger.public_key())[:16]}…), not the anchor key "
        f"({key_id(KEY.public_key())[:16]}…)"
    )


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"anchor": {}}', '{"anchor": {}, "signature": "x", "more": 1}', "{" * 10_000],
)
def test_a_file_that_is_no_anchor_is_refused(text):
    with pytest.raises(AnchorRefused, match="not an anchor file"):
        read_document(text, KEY.public_key())
