"""What an auditor sees: verify and replay on clean and tampered logs, show and export.

Each tampering is done the way someone with write access to the database would do it, with
plain SQL behind the service's back; the audit must name the first row it breaks.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from tests.factories import ANNA, HERMEGILDA, add_eploz_account, user
from ueoz_migration.audit.chain import link_hash
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


def test_a_clean_log_verifies_and_replays(services):
    attempt = logged_journey(services)
    add_eploz_account(services)
    services.journey.start(ANNA, actor=user())

    checked, replayed = verify(services), replay(services)

    assert (checked.ok, checked.attempts, checked.rows) == (True, 2, 7)
    assert (replayed.ok, replayed.attempts, replayed.rows) == (True, 2, 7)
    assert verify(services, [attempt.id]).rows == 6


def test_an_edited_row_breaks_the_chain_at_that_row_and_the_replay_there(services):
    attempt = logged_journey(services)
    tamper(
        services,
        "UPDATE transition_log SET target = 'done' WHERE seq = 4 AND attempt_id = :a",
        a=attempt.id,
    )

    checked, replayed = verify(services), replay(services)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 4)
    assert "hash does not recompute" in checked.first.problem
    assert replayed.first.seq == 4
    assert "lead from 'error' to 'email_entry', logged 'done'" in replayed.first.problem


def test_an_edited_field_that_replay_cannot_see_still_breaks_the_chain(services):
    attempt = logged_journey(services)
    tamper(services, "UPDATE transition_log SET actor = 'helpdesk' WHERE seq = 2")

    checked = verify(services)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 2)
    assert replay(services).ok


def test_a_deleted_middle_row_is_named_as_missing(services):
    attempt = logged_journey(services)
    tamper(services, "DELETE FROM transition_log WHERE seq = 4")

    checked, replayed = verify(services), replay(services)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 4)
    assert checked.first.problem.startswith("row 4 is missing")
    assert replayed.first.seq == 5
    assert "expected source 'error', logged 'email_entry'" in replayed.first.problem


def test_a_cut_off_tail_no_longer_meets_the_attempts_head(services):
    attempt = logged_journey(services)
    tamper(services, "DELETE FROM transition_log WHERE seq = 6")

    checked, replayed = verify(services), replay(services)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 6)
    assert "tail was cut off" in checked.first.problem
    assert "replay ends in 'email_entry', the attempt is in 'awaiting_verification'" in (
        replayed.first.problem
    )


def test_two_swapped_rows_break_the_chain_at_the_first_of_them(services):
    attempt = logged_journey(services)
    tamper(
        services,
        "UPDATE transition_log SET seq = -4 WHERE seq = 4",
        "UPDATE transition_log SET seq = 4 WHERE seq = 5",
        "UPDATE transition_log SET seq = 5 WHERE seq = -4",
    )

    checked, replayed = verify(services), replay(services)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 4)
    assert "prev_hash does not match the hash of row 3" in checked.first.problem
    assert replayed.first.seq == 4
    assert "expected source 'error', logged 'email_entry' ('submit' rejected)" in (
        replayed.first.problem
    )


def test_an_edited_flow_definition_is_caught_by_both(services):
    attempt = logged_journey(services)
    tamper(services, "UPDATE flow_versions SET source = source || '\n# edited\n'")

    checked, replayed = verify(services), replay(services)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 1)
    assert "no longer hashes to it" in checked.first.problem
    assert (replayed.first.attempt_id, replayed.first.seq) == (attempt.id, 1)
    assert "cannot be rebuilt" in replayed.first.problem


def test_an_event_number_changed_on_the_attempt_diverges_from_the_log(services):
    attempt = logged_journey(services)
    tamper(services, "UPDATE attempts SET event_code = 201")

    replayed = replay(services)

    assert replayed.first.attempt_id == attempt.id
    assert "code 208, the attempt shows" in replayed.first.problem
    assert verify(services).ok  # the chain itself is intact: the attempt row is not chained


def test_another_audit_key_fails_every_chain_at_its_first_row(services):
    attempt = logged_journey(services)

    with services.sessions() as session:
        checked = verify_chain(session, b"not-the-key", None)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 1)


def test_only_the_tampered_attempt_is_reported(services):
    attempt = logged_journey(services)
    add_eploz_account(services)
    other = services.journey.start(ANNA, actor=user())
    tamper(
        services,
        "UPDATE transition_log SET request_id = 'forged' WHERE attempt_id = :a",
        a=other.id,
    )

    checked = verify(services)

    assert checked.broken_attempts == 1
    assert checked.first.attempt_id == other.id
    assert verify(services, [attempt.id]).ok


def test_cli_verify_and_replay_exit_0_with_a_summary_on_a_clean_log(services):
    attempt = logged_journey(services)

    verified = audit_cli(services, "verify")
    replayed = audit_cli(services, "replay", attempt.event_number)
    replayed_all = audit_cli(services, "replay", "--all")

    assert verified.exit_code == 0, verified.output
    assert "verify: OK; 1 attempt(s), 6 row(s) in" in verified.output
    assert replayed.exit_code == 0, replayed.output
    assert "replay: OK; 1 attempt(s), 6 row(s)" in replayed.output
    assert replayed_all.exit_code == 0


def test_cli_verify_and_replay_exit_1_naming_the_first_broken_link(services):
    attempt = logged_journey(services)
    tamper(services, "DELETE FROM transition_log WHERE seq = 4")

    verified = audit_cli(services, "verify", attempt.id)
    replayed = audit_cli(services, "replay", attempt.id)

    assert verified.exit_code == 1
    assert f"FIRST BROKEN LINK: attempt {attempt.id}, seq 4: row 4 is missing" in verified.output
    assert replayed.exit_code == 1
    assert f"FIRST BROKEN LINK: attempt {attempt.id}, seq 5: expected source" in replayed.output


def test_cli_refuses_an_unknown_attempt_and_a_replay_without_scope(services):
    unknown = audit_cli(services, "verify", "MIGRATION_999999999999")
    no_scope = audit_cli(services, "replay")

    assert unknown.exit_code == 1
    assert "no attempt has the id or event number 'MIGRATION_999999999999'" in unknown.output
    assert no_scope.exit_code == 2
    assert "or give --all" in no_scope.output


def test_cli_refuses_to_read_the_log_with_a_key_made_up_on_the_spot(services, tmp_path):
    # A development audit key is made on first use; for an existing log that would be the
    # wrong key, and every attempt would look tampered with.
    logged_journey(services)
    environ = {"DATABASE_URL": services.settings.database_url, "INSTANCE_DIR": str(tmp_path)}

    for command in (
        ["audit", "verify"],
        ["helpdesk", "lookup", "MIGRATION_1", "--pesel-last3", "1"],
    ):
        result = CliRunner().invoke(main, command, env=environ)

        assert result.exit_code == 1, command
        assert result.output == (
            f"Error: AUDIT_KEY is not set and {tmp_path / 'audit_key'} does not exist: set "
            "AUDIT_KEY (or INSTANCE_DIR) to the key the log was written with.\n"
        )
    assert not (tmp_path / "audit_key").exists()


def test_cli_show_prints_the_attempts_log_as_a_table(services):
    attempt = logged_journey(services)

    shown = audit_cli(services, "show", attempt.event_number)

    assert shown.exit_code == 0, shown.output
    header, table = shown.output.splitlines()[0], shown.output.splitlines()[1:]
    rows = [re.split(r"\s{2,}", line) for line in table]
    assert header.startswith(f"attempt {attempt.id}  state awaiting_verification")
    assert rows[0][:4] == ["seq", "time (UTC)", "event", "source → target"]
    assert rows[3][2:] == [
        "search_failed",
        "searching → error",
        "applied",
        "user",
        "req-2",
        f"{attempt.event_number} / 208",
    ]
    assert rows[4][2:] == ["verify", "error → error", "refused", "user", "req-3"]
    assert rows[7][0] == "6"
    assert HERMEGILDA.pesel not in shown.output


def test_cli_export_writes_verifiable_json_lines_without_personal_data(services, tmp_path):
    attempt = logged_journey(services)
    out = tmp_path / "log.jsonl"

    exported = audit_cli(services, "export", "--attempt", attempt.id, "--output", str(out))

    assert exported.exit_code == 0, exported.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [record["seq"] for record in records] == [1, 2, 3, 4, 5, 6]
    prev = "0" * 64
    for record in records:
        assert record["prev_hash"] == prev
        assert link_hash(services.settings.audit_key, prev, record) == record["hash"]
        prev = record["hash"]
    dump = out.read_text()
    for personal in (HERMEGILDA.pesel, HERMEGILDA.family_name, "h@example.pl"):
        assert personal not in dump
    assert '"email": "h***@example.pl"' in records[-1]["detail"]
