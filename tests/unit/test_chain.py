"""The audit's fast row hasher gives exactly the hash the journey wrote."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ueoz_migration.audit.chain import CHAINED_FIELDS, GENESIS, RowHasher, link_hash

ROW = {
    "attempt_id": "a" * 32,
    "seq": 7,
    "at": datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "event": "submit",
    "source": "email_entry",
    "target": "awaiting_verification",
    "outcome": "applied",
    "actor": "user",
    "request_id": "req-1",
    "flow_version": "f" * 64,
    "event_number": None,
    "event_code": None,
    "pesel_hash": "0" * 64,
    "detail": '{"email": "a***@example.pl"}',
}


def as_read(fields):
    """The tuple an audit reads: chained fields in order, ``at`` as the database formats it."""
    return tuple(
        fields[name].isoformat(timespec="microseconds") if name == "at" else fields[name]
        for name in CHAINED_FIELDS
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"event_number": "MIGRATION_000000000042", "event_code": 208},
        {"detail": '{"email": "ż***@zażółć.pl", "q": "\\"\\n\\t\\u0001"}'},
        {"request_id": 'quote" back\\slash \u2028 line sep', "source": ""},
        {"at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)},
    ],
)
@pytest.mark.parametrize("key", [b"short", b"k" * 64, b"a-key-longer-than-one-block-" * 4])
def test_the_row_hasher_matches_link_hash(changes, key):
    fields = ROW | changes
    assert RowHasher(key)(GENESIS, as_read(fields)) == link_hash(key, GENESIS, fields)


def test_the_row_hasher_sees_every_field():
    hasher = RowHasher(b"key")
    original = hasher(GENESIS, as_read(ROW))
    other = {"seq": 8, "event_code": 201, "at": datetime(2030, 1, 1, tzinfo=UTC)}

    for name in CHAINED_FIELDS:
        changed = ROW | {name: other.get(name, f"{ROW[name] or ''}x")}
        assert hasher(GENESIS, as_read(changed)) != original, name
