"""The audit tests' parts: a journey whose log has every outcome, and ways to tamper and check."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from tests.factories import HERMEGILDA, user
from ueoz_migration.audit.replay import replay_log
from ueoz_migration.audit.verify import verify_chain
from ueoz_migration.cli import main
from ueoz_migration.journey import EventRefused


def logged_journey(services):
    """One attempt whose log has every outcome: applied, refused, rejected (rows 1-6)."""
    journey = services.journey
    attempt = journey.start(HERMEGILDA, actor=user("req-1"))
    journey.fire(attempt.id, "search_failed", actor=user("req-2"), code=208)  # 2
    with pytest.raises(EventRefused):
        journey.fire(attempt.id, "verify", actor=user("req-3"), token="x")  # 3 refused
    journey.fire(attempt.id, "continue_new", actor=user("req-4"))  # 4
    with pytest.raises(EventRefused):
        journey.fire(attempt.id, "submit", actor=user("req-5"), email="h@example.pl")  # 5 rejected
    return journey.fire(  # 6
        attempt.id,
        "submit",
        actor=user("req-6"),
        email="h@example.pl",
        email_repeat="h@example.pl",
        terms_accepted=True,
    )


def tamper(services, *statements, **params):
    with services.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), params)


def verify(services, attempt_ids=None):
    with services.sessions() as session:
        return verify_chain(session, services.settings.audit_key, attempt_ids)


def replay(services, attempt_ids=None):
    with services.sessions() as session:
        return replay_log(session, attempt_ids)


def audit_cli(services, *args):
    return CliRunner().invoke(main, ["audit", *args], env=dict(services.settings.raw))


def export_now(services, path):
    assert audit_cli(services, "export", "--output", str(path)).exit_code == 0
    return path


def output_lines(result):
    """The command's lines, each summary's timing cut off (it differs from run to run)."""
    return [
        re.sub(r" in \d+\.\d{3} s \(.*\)$", " in … s", line) for line in result.output.splitlines()
    ]


def delete_attempt_row(services, attempt_id):
    """Delete an attempt's row behind the service's back, with its foreign keys off, so that
    its log rows (and links, mail, event numbers) are left behind."""
    if services.engine.dialect.name == "sqlite":
        # The pragma takes effect outside a transaction only: on a connection of its own.
        connection = services.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.execute("DELETE FROM attempts WHERE id = ?", (attempt_id,))
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            connection.close()
    else:
        tamper(
            services,
            "SET LOCAL session_replication_role = replica",  # no foreign-key triggers
            "DELETE FROM attempts WHERE id = :a",
            a=attempt_id,
        )
