"""Event numbers: written one way, read back however a caller dictates them."""

from __future__ import annotations

import pytest

from ueoz_migration.domain.event_numbers import (
    NotAnEventNumber,
    format_event_number,
    is_event_number,
    normalize_event_number,
)


def test_a_number_is_migration_and_twelve_digits():
    assert format_event_number(42) == "MIGRATION_000000000042"
    assert is_event_number(format_event_number(999_999_999_999))


@pytest.mark.parametrize(
    "spoken", ["migration_000000000042", " MIGRATION_ 0000 0000 0042 ", "Migration_000000000042"]
)
def test_a_dictated_number_reads_back_as_written(spoken):
    assert normalize_event_number(spoken) == "MIGRATION_000000000042"


@pytest.mark.parametrize("typed", ["MIGRATION_12", "97040117247", "MIGRATION-000000000042", ""])
def test_anything_else_is_refused_without_being_repeated(typed):
    with pytest.raises(NotAnEventNumber) as refused:
        normalize_event_number(typed)

    assert str(refused.value) == (
        "not an event number (MIGRATION_ and 12 digits, e.g. MIGRATION_000000000042)"
    )
    assert not is_event_number(typed)
