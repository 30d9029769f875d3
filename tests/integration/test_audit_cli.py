"""The audit commands as an auditor types them: references, summaries, show, and their refusals."""

from __future__ import annotations

import re

from click.testing import CliRunner

from tests.audit_log import (
    audit_cli,
    delete_attempt_row,
    logged_journey,
    tamper,
)
from tests.factories import HERMEGILDA
from ueoz_migration.cli import main


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


def test_cli_does_not_print_back_a_pesel_given_for_an_attempt(services):
    result = audit_cli(services, "show", "97040117247")

    assert result.exit_code == 1
    assert "97040117247" not in result.output
    assert "no attempt has the id or event number '********247'" in result.output


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
    # The detail (the reason of a refusal or rejection, the masked e-mail) is the last column.
    assert rows[4][2:] == [
        "verify",
        "error → error",
        "refused",
        "user",
        "req-3",
        "reason=not_allowed",
    ]
    assert rows[6][2:] == [
        "submit",
        "email_entry → email_entry",
        "rejected",
        "user",
        "req-5",
        "reason=invalid_submission",
    ]
    assert rows[7][0] == "6"
    assert rows[7][-1] == "email=h***@e***.pl"
    assert rows[2][-1] == "req-1"  # no detail, no trailing column
    assert HERMEGILDA.pesel not in shown.output
    assert "h@example.pl" not in shown.output


def test_cli_show_keeps_an_edited_detail_on_one_line(services):
    attempt = logged_journey(services)
    tamper(
        services,
        "UPDATE transition_log SET detail = :d WHERE attempt_id = :a AND seq = 2",
        d="forged\nline",
        a=attempt.id,
    )

    shown = audit_cli(services, "show", attempt.id)

    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) == 1 + 2 + 6  # the attempt, the header and rule, one line a row
    assert lines[4].endswith(f"{attempt.event_number} / 208  forged\\nline")


def test_cli_show_and_export_of_an_attempt_whose_row_was_deleted(services, tmp_path):
    attempt = logged_journey(services)
    delete_attempt_row(services, attempt.id)
    out = tmp_path / "log.jsonl"

    shown = audit_cli(services, "show", attempt.event_number)
    exported = audit_cli(services, "export", "--attempt", attempt.id, "--output", str(out))

    assert shown.exit_code == 1
    assert shown.output == (
        f"Error: no attempt has the id or event number {attempt.event_number!r}, but the log "
        f"holds rows of attempt {attempt.id}: its attempt row was deleted "
        f"(audit verify {attempt.id})\n"
    )
    assert exported.exit_code == 0, exported.output
    assert len(out.read_text().splitlines()) == 6  # the rows left behind, as a whole export


def test_cli_a_reference_with_neither_attempt_nor_log_rows_is_still_unknown(services):
    logged_journey(services)

    for command in ("verify", "replay", "show"):
        unknown = audit_cli(services, command, "0" * 32)

        assert unknown.exit_code == 1, command
        assert unknown.output == f"Error: no attempt has the id or event number {'0' * 32!r}\n"


def test_cli_takes_an_event_number_in_any_case_and_with_spaces(services, tmp_path):
    attempt = logged_journey(services)
    spoken = attempt.event_number.lower().replace("_", "_ ")
    out = tmp_path / "log.jsonl"

    shown = audit_cli(services, "show", spoken)
    verified = audit_cli(services, "verify", spoken)
    replayed = audit_cli(services, "replay", f" {spoken} ")
    exported = audit_cli(services, "export", "--attempt", spoken, "--output", str(out))

    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"attempt {attempt.id}  state awaiting_verification")
    assert verified.exit_code == replayed.exit_code == exported.exit_code == 0
    assert "verify: OK; 1 attempt(s), 6 row(s)" in verified.output
    assert "replay: OK; 1 attempt(s), 6 row(s)" in replayed.output
    assert len(out.read_text().splitlines()) == 6
