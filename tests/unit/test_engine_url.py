"""The database address as commands print it: never with its password."""

from __future__ import annotations

import pytest

from ueoz_migration.db.engine import make_engine, shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://ueoz:S3CRET@db.example/ueoz",
            "postgresql+psycopg://ueoz:***@db.example/ueoz",
        ),
        (
            "postgresql://ueoz@db.example/ueoz?password=S3CRET",
            "postgresql+psycopg://ueoz@db.example/ueoz?password=***",
        ),
        (
            "postgresql://ueoz@/ueoz?host=/run/postgresql&sslpassword=S3CRET",
            "postgresql+psycopg://ueoz@/ueoz?host=%2Frun%2Fpostgresql&sslpassword=***",
        ),
    ],
)
def test_a_database_address_is_shown_without_its_password_wherever_it_was_given(url, shown):
    engine = make_engine(url)  # no connection is made

    assert shown_url(engine) == shown
