"""What verify and replay find in a log tampered with in the database: the first row it breaks.

Each tampering is done the way someone with write access to the database would do it, with
plain SQL behind the service's back; the audit must name the first row it breaks.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.audit_log import (
    audit_cli,
    delete_attempt_row,
    logged_journey,
    output_lines,
    replay,
    tamper,
    verify,
)
from tests.factories import ANNA, add_eploz_account, user
from ueoz_migration.audit.verify import verify_chain
from ueoz_migration.cli import main
from ueoz_migration.journey import EventRefused


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


def test_a_tail_cut_off_with_the_head_and_state_rewound_is_caught_by_the_open_place(services):
    # Whoever can write to the database can cut the last rows off and set the attempt back to
    # the row before, keyless (the hashes are stored): the chain then verifies. An ended
    # attempt set back to an open state no longer holds the person's open place, though.
    attempt = logged_journey(services)
    services.journey.fire(attempt.id, "change_email", actor=user())  # row 7: email_entry
    services.journey.fire(attempt.id, "cancel", actor=user())  # row 8: cancelled, ended
    tamper(
        services,
        "DELETE FROM transition_log WHERE attempt_id = :a AND seq = 8",
        "UPDATE attempts SET log_seq = 7, state = 'email_entry', log_head = "
        "(SELECT hash FROM transition_log WHERE attempt_id = :a AND seq = 7) WHERE id = :a",
        a=attempt.id,
    )

    assert verify(services).ok  # what docs/audit.md says the chain cannot catch alone
    assert replay(services).first.problem == (
        "replay ends in 'email_entry', which is open, but the attempt is marked "
        "ended (its open_pesel_key is empty)"
    )


def test_an_attempt_ended_outside_the_flow_is_caught_by_replay(services):
    attempt = logged_journey(services)  # awaiting_verification, open
    tamper(services, "UPDATE attempts SET open_pesel_key = NULL WHERE id = :a", a=attempt.id)

    assert replay(services).first.problem == (
        "replay ends in 'awaiting_verification', which is open, but the attempt is marked "
        "ended (its open_pesel_key is empty)"
    )

    ended = services.journey.start(ANNA, actor=user())
    services.journey.fire(ended.id, "cancel", actor=user())
    tamper(
        services,
        "UPDATE attempts SET open_pesel_key = 'x' WHERE id = :a",
        a=ended.id,
    )
    (finding,) = [f for f in replay(services, [ended.id]).findings]
    assert finding.problem == (
        "replay ends in 'cancelled', which is final, but the attempt is still marked open "
        "(open_pesel_key)"
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


def append_row_without_the_key(services, attempt_id):
    """Add a row 7 after the head, chained to row 6 but with a hash made up (no key)."""
    tamper(
        services,
        "INSERT INTO transition_log (attempt_id, seq, at, event, source, target, outcome, "
        "actor, request_id, flow_version, event_number, event_code, pesel_hash, detail, "
        "prev_hash, hash) "
        "SELECT attempt_id, 7, at, 'verify', target, target, 'applied', actor, 'forged', "
        "flow_version, NULL, NULL, pesel_hash, '', hash, :h "
        "FROM transition_log WHERE attempt_id = :a AND seq = 6",
        a=attempt_id,
        h="f" * 64,
    )


@pytest.mark.parametrize("by", ["event number", "id"])
def test_cli_verify_and_replay_of_an_attempt_whose_row_was_deleted_report_tampering(services, by):
    attempt = logged_journey(services)
    delete_attempt_row(services, attempt.id)
    reference = attempt.event_number if by == "event number" else attempt.id

    verified = audit_cli(services, "verify", reference)
    replayed = audit_cli(services, "replay", reference)
    verified_all = audit_cli(services, "verify", "--all")

    finding = (
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 1: rows of an attempt that does not exist"
    )
    assert verified.exit_code == replayed.exit_code == verified_all.exit_code == 1
    assert (
        output_lines(verified)
        == output_lines(verified_all)
        == [
            finding,
            "verify: 1 attempt(s) with a problem; 1 attempt(s), 6 row(s) in … s",
        ]
    )
    assert output_lines(replayed) == [
        finding,
        "replay: 1 attempt(s) with a problem; 1 attempt(s), 6 row(s) in … s",
    ]


def test_rows_added_past_the_head_without_the_key_are_named_as_added(services):
    attempt = logged_journey(services)
    append_row_without_the_key(services, attempt.id)

    checked = verify(services)
    verified = audit_cli(services, "verify", attempt.event_number)

    assert (checked.first.attempt_id, checked.first.seq) == (attempt.id, 7)
    assert checked.first.problem == (
        "the log goes on past the attempt's head at seq 6 (rows were added)"
    )
    assert verified.exit_code == 1
    assert output_lines(verified) == [
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 7: the log goes on past the attempt's "
        "head at seq 6 (rows were added)",
        "verify: 1 attempt(s) with a problem; 1 attempt(s), 7 row(s) in … s",
    ]


def test_rows_past_the_head_with_a_good_chain_are_named_as_added_too(services):
    # Rows 7 and 8 written by the service, then the attempt's head moved back to row 6: the
    # same as rows appended by someone holding the key.
    attempt = logged_journey(services)
    for request in ("req-7", "req-8"):
        with pytest.raises(EventRefused):
            services.journey.fire(attempt.id, "verify", actor=user(request), token="x")
    tamper(
        services,
        "UPDATE attempts SET log_seq = 6, log_head = (SELECT hash FROM transition_log "
        "WHERE attempt_id = :a AND seq = 6) WHERE id = :a",
        a=attempt.id,
    )

    checked = verify(services)

    assert (checked.first.seq, checked.first.problem) == (
        7,
        "the log goes on past the attempt's head at seq 6 (rows were added)",
    )


def test_an_edited_row_before_rows_added_past_the_head_is_the_first_broken_link(services):
    attempt = logged_journey(services)
    tamper(services, "UPDATE transition_log SET request_id = 'forged' WHERE seq = 5")
    append_row_without_the_key(services, attempt.id)

    checked = verify(services)

    assert (checked.first.seq, checked.first.problem) == (
        5,
        "hash does not recompute from the row's fields (the row was changed)",
    )


def test_a_deleted_first_row_says_where_the_log_starts(services):
    attempt = logged_journey(services)
    tamper(services, "DELETE FROM transition_log WHERE seq = 1")

    verified = audit_cli(services, "verify", attempt.id)

    assert verified.exit_code == 1
    assert output_lines(verified)[0] == (
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 1: row 1 is missing "
        "(the log starts at seq 2)"
    )


def two_attempts(services):
    """The logged journey (6 rows) and Anna's new attempt (1 row): their ids."""
    journey = logged_journey(services)
    add_eploz_account(services)
    return journey.id, services.journey.start(ANNA, actor=user()).id


def test_cli_with_another_audit_key_asks_whether_it_is_the_right_one(services):
    journey, anna = two_attempts(services)
    first, second = sorted([journey, anna])
    environ = {**services.settings.raw, "AUDIT_KEY": "not-the-key-that-wrote-the-log"}

    verified = CliRunner().invoke(main, ["audit", "verify"], env=environ)
    one = CliRunner().invoke(main, ["audit", "verify", anna], env=environ)

    changed = "hash does not recompute from the row's fields (the row was changed)"
    assert verified.exit_code == one.exit_code == 1
    assert output_lines(verified) == [
        f"FIRST BROKEN LINK: attempt {first}, seq 1: {changed}",
        f"  also: attempt {second}, seq 1: {changed}",
        "every attempt fails at its first row: is AUDIT_KEY the key that wrote this log?",
        "verify: 2 attempt(s) with a problem; 2 attempt(s), 7 row(s) in … s",
    ]
    assert output_lines(one) == [
        f"FIRST BROKEN LINK: attempt {anna}, seq 1: {changed}",
        "the first rows of other attempts fail too: is AUDIT_KEY the key that wrote this log?",
        "verify: 1 attempt(s) with a problem; 1 attempt(s), 1 row(s) in … s",
    ]


def test_a_first_row_edited_under_the_right_key_raises_no_question_about_it(services):
    _, anna = two_attempts(services)
    tamper(services, "UPDATE transition_log SET actor = 'x' WHERE attempt_id = :a", a=anna)

    whole, one = verify(services), verify(services, [anna])

    assert (whole.first.attempt_id, whole.first.seq) == (anna, 1)
    assert whole.notes == one.notes == []


def test_a_log_of_one_attempt_cannot_tell_another_key_from_an_edit(services):
    attempt = logged_journey(services)

    with services.sessions() as session:
        checked = verify_chain(session, b"not-the-key", None)
        named = verify_chain(session, b"not-the-key", [attempt.id])

    assert checked.first.seq == named.first.seq == 1
    assert checked.notes == named.notes == []


def test_cli_verify_names_a_last_row_that_is_not_the_attempts_head(services):
    # The attempt's head edited behind the service's back: every row checks out, but the
    # log no longer ends at the head the attempt keeps.
    attempt = logged_journey(services)
    tamper(services, "UPDATE attempts SET log_head = :h WHERE id = :a", h="e" * 64, a=attempt.id)

    verified = audit_cli(services, "verify", attempt.event_number)

    assert verified.exit_code == 1
    assert output_lines(verified) == [
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 6: the last row's hash is not the "
        "attempt's head",
        "verify: 1 attempt(s) with a problem; 1 attempt(s), 6 row(s) in … s",
    ]


def test_cli_verify_names_a_flow_version_no_longer_stored(services):
    attempt = logged_journey(services)
    version = attempt.flow_version
    tamper(services, "DELETE FROM flow_versions WHERE version = :v", v=version)

    verified = audit_cli(services, "verify", "--all")

    assert verified.exit_code == 1
    assert output_lines(verified) == [
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 1: flow version {version[:12]}… is not "
        "stored in flow_versions",
        "verify: 1 attempt(s) with a problem; 1 attempt(s), 6 row(s) in … s",
    ]
