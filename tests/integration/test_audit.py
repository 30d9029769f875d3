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
from ueoz_migration.domain.privacy import pesel_hash
from ueoz_migration.flow import load_flow_file
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


def export_now(services, path):
    assert audit_cli(services, "export", "--output", str(path)).exit_code == 0
    return path


def test_an_earlier_export_compares_clean_with_a_log_that_has_grown(services, tmp_path):
    attempt = logged_journey(services)
    services.journey.start(ANNA, actor=user())
    earlier = export_now(services, tmp_path / "earlier.jsonl")
    services.journey.fire(attempt.id, "change_email", actor=user())  # rows written since

    compared = audit_cli(services, "compare", str(earlier))

    assert compared.exit_code == 0, compared.output
    assert output_lines(compared) == ["compare: OK; 2 attempt(s), 7 row(s) in … s"]


def test_an_earlier_export_shows_a_tail_cut_off_with_the_head_set_back(services, tmp_path):
    attempt = logged_journey(services)
    earlier = export_now(services, tmp_path / "earlier.jsonl")
    tamper(
        services,
        "DELETE FROM transition_log WHERE attempt_id = :a AND seq = 6",
        "UPDATE attempts SET log_seq = 5, state = 'email_entry', log_head = "
        "(SELECT hash FROM transition_log WHERE attempt_id = :a AND seq = 5) WHERE id = :a",
        a=attempt.id,
    )
    assert verify(services).ok and replay(services).ok  # the database alone cannot tell

    compared = audit_cli(services, "compare", str(earlier))

    assert compared.exit_code == 1
    assert output_lines(compared) == [
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 6: in the export, no longer in the log "
        "(cut off or deleted since)",
        "compare: 1 attempt(s) with a problem; 1 attempt(s), 6 row(s) in … s",
    ]


def test_an_earlier_export_shows_a_row_a_key_holder_rewrote(services, tmp_path):
    attempt = logged_journey(services)
    earlier = export_now(services, tmp_path / "earlier.jsonl")
    # Whoever holds AUDIT_KEY (any web instance, worker or auditor) rewrites row 2's actor and
    # the chain after it: the chain verifies.
    records = [json.loads(line) for line in earlier.read_text().splitlines()]
    records[1]["actor"] = "helpdesk"
    prev = "0" * 64
    for record in records:
        record["prev_hash"], record["hash"] = (
            prev,
            link_hash(services.settings.audit_key, prev, record),
        )
        prev = record["hash"]
        tamper(
            services,
            "UPDATE transition_log SET actor = :actor, prev_hash = :prev, hash = :hash "
            "WHERE attempt_id = :a AND seq = :seq",
            actor=record["actor"],
            prev=record["prev_hash"],
            hash=record["hash"],
            a=attempt.id,
            seq=record["seq"],
        )
    tamper(services, "UPDATE attempts SET log_head = :h WHERE id = :a", h=prev, a=attempt.id)
    assert verify(services).ok

    compared = audit_cli(services, "compare", str(earlier))

    assert compared.exit_code == 1
    assert output_lines(compared)[0] == (
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 2: changed since the export: actor, hash"
    )


def test_an_earlier_export_shows_an_attempt_deleted_with_its_log(services, tmp_path):
    attempt = logged_journey(services)
    services.journey.start(ANNA, actor=user())
    earlier = export_now(services, tmp_path / "earlier.jsonl")
    delete_attempt_row(services, attempt.id)
    tamper(services, "DELETE FROM transition_log WHERE attempt_id = :a", a=attempt.id)
    assert verify(services).ok and replay(services).ok

    compared = audit_cli(services, "compare", str(earlier))

    assert compared.exit_code == 1
    assert output_lines(compared)[0] == (
        f"FIRST BROKEN LINK: attempt {attempt.id}, seq 1: in the export, no longer in the log "
        "(cut off or deleted since)"
    )


def _row(line: str, **changes) -> str:
    return json.dumps({**json.loads(line), **changes})  # \ud800 stays an escape


# Each edit takes the rows of an attempt with six (big) and of one with a single row (small).
@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda big, small: [big[0], '{"attempt_id": "x"}', *big[1:]], "line 2 is not a row"),
        (lambda big, small: [big[0], "not json", *big[1:]], "line 2 is not a row"),
        (lambda big, small: [_row(big[0], seq=True), *big[1:]], "line 1 is not a row"),
        (lambda big, small: [_row(big[0], seq="1"), *big[1:]], "line 1 is not a row"),
        (lambda big, small: [_row(big[0], attempt_id="\ud800")], "line 1 is not a row"),
        (lambda big, small: [_row(big[0], attempt_id="a\u0000b")], "line 1 is not a row"),
        (lambda big, small: [big[0], big[0], *big[1:]], "line 2: seq 1 of attempt"),
        (lambda big, small: [*big[1:3], big[0], *big[3:]], "line 3: seq 1 of attempt"),
        (lambda big, small: [big[0], *small, *big[1:]], "line 3: attempt"),  # not together
        (lambda big, small: [], "the file holds no row of an audit export"),
        (lambda big, small: [_row(big[0], event_code="5"), *big[1:]], "line 1 is not a row"),
        (lambda big, small: [_row(big[0], event_code=True), *big[1:]], "line 1 is not a row"),
        (lambda big, small: [_row(big[0], actor=None), *big[1:]], "line 1 is not a row"),
        (lambda big, small: [_row(big[0], hash=7), *big[1:]], "line 1 is not a row"),
        (
            lambda big, small: [_row(big[0], flow_version="../../../etc/passwd"), *big[1:]],
            "line 1 is not a row",
        ),
        (
            lambda big, small: [_row(big[0], event="\u001b]0;pwned\u0007"), *big[1:]],
            "line 1 is not a row",
        ),
        (lambda big, small: [big[0], "[" * 100_000, *big[1:]], "line 2 is not a row"),
        (lambda big, small: [big[0].replace('"seq":1', '"seq":1' + "0" * 5000)], "line 1 is"),
    ],
    ids=[
        "columns",
        "not-json",
        "seq-true",
        "seq-text",
        "surrogate",
        "nul",
        "row-twice",
        "out-of-order",
        "attempt-split",
        "empty",
        "code-text",
        "code-true",
        "actor-null",
        "hash-number",
        "version-path",
        "control-sequence",
        "deep-nesting",
        "huge-number",
    ],
)
def test_compare_refuses_a_file_that_is_not_an_export(services, tmp_path, edit, reason):
    attempt = logged_journey(services)
    services.journey.start(ANNA, actor=user())
    earlier = export_now(services, tmp_path / "earlier.jsonl")
    rows = earlier.read_text().splitlines()
    big = [row for row in rows if json.loads(row)["attempt_id"] == attempt.id]
    small = [row for row in rows if row not in big]
    earlier.write_text("".join(f"{line}\n" for line in edit(big, small)))

    compared = audit_cli(services, "compare", str(earlier))

    assert compared.exit_code == 1
    assert compared.output.startswith(f"Error: {earlier}: {reason}")
    assert "Traceback" not in compared.output and len(compared.output.splitlines()) == 1


def offline(services, command, export, *args):
    """`audit COMMAND --export` where no database can be reached: only the key comes along."""
    env = {
        "AUDIT_KEY": services.settings.raw["AUDIT_KEY"],
        "DATABASE_URL": "sqlite:////nonexistent/no-database-here.sqlite3",
    }
    return CliRunner().invoke(main, ["audit", command, "--export", str(export), *args], env=env)


def verify_offline(services, export, *args):
    return offline(services, "verify", export, *args)


def replay_offline(services, export, *args):
    return offline(services, "replay", export, *args)


EXPORT_LIMITS = (
    "an export alone cannot show rows or attempts left out, from the log before it was "
    "written or from the file since, nor its attempts' heads: audit verify and audit "
    "compare, against the database, can"
)


def test_an_export_verifies_with_the_key_alone(services, tmp_path):
    logged_journey(services)
    services.journey.start(ANNA, actor=user())
    export = export_now(services, tmp_path / "log.jsonl")

    checked = verify_offline(services, export)

    assert checked.exit_code == 0, checked.output
    assert output_lines(checked) == [EXPORT_LIMITS, "verify: OK; 2 attempt(s), 7 row(s) in … s"]


def _rewrite(export, change):
    records = [json.loads(line) for line in export.read_text().splitlines()]
    export.write_text("".join(json.dumps(r) + "\n" for r in change(records)))
    return records[0]["attempt_id"]


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (
            lambda rows: [*rows[:1], {**rows[1], "actor": "helpdesk"}, *rows[2:]],
            "seq 2: hash does not recompute from the row's fields (the row was changed)",
        ),
        (
            lambda rows: [*rows[:2], *rows[3:]],
            "seq 3: row 3 is missing (the export goes from seq 2 to 4)",
        ),
        (lambda rows: rows[1:], "seq 1: row 1 is missing (the export starts at seq 2)"),
        (
            lambda rows: [*rows[:2], {**rows[3], "seq": 3}, *rows[4:]],
            "seq 3: prev_hash does not match the hash of row 2 (rows were removed, added or "
            "reordered)",
        ),
    ],
    ids=["edited", "removed", "head-removed", "renumbered"],
)
def test_an_export_edited_without_the_key_names_its_first_broken_link(
    services, tmp_path, change, finding
):
    logged_journey(services)
    export = export_now(services, tmp_path / "log.jsonl")
    attempt_id = _rewrite(export, change)

    checked = verify_offline(services, export)

    assert checked.exit_code == 1
    assert output_lines(checked) == [
        f"FIRST BROKEN LINK: attempt {attempt_id}, {finding}",
        EXPORT_LIMITS,
        "verify: 1 attempt(s) with a problem; 1 attempt(s), "
        f"{len(export.read_text().splitlines())} row(s) in … s",
    ]


def test_an_export_checked_with_another_key_says_the_key_looks_wrong(services, tmp_path):
    logged_journey(services)
    services.journey.start(ANNA, actor=user())
    export = export_now(services, tmp_path / "log.jsonl")
    env = {"AUDIT_KEY": "another key of at least thirty-two characters, not this log's"}

    checked = CliRunner().invoke(main, ["audit", "verify", "--export", str(export)], env=env)

    assert checked.exit_code == 1
    assert (
        "every attempt fails at its first row: is AUDIT_KEY the key that wrote the exported "
        "log?" in output_lines(checked)
    )


def rows_version() -> str:
    """The version of the flow the journeys of these tests run."""
    return load_flow_file().version


REPLAY_LIMITS = (
    "an export alone cannot show where its attempts stand now (their state, open place and "
    "event number are in the database): audit replay there can"
)


def test_an_export_replays_against_the_flow_versions_the_release_keeps(services, tmp_path):
    logged_journey(services)  # applied, refused and rejected rows
    services.journey.start(ANNA, actor=user())
    export = export_now(services, tmp_path / "log.jsonl")

    replayed = replay_offline(services, export)

    assert replayed.exit_code == 0, replayed.output
    assert output_lines(replayed) == [REPLAY_LIMITS, "replay: OK; 2 attempt(s), 7 row(s) in … s"]


@pytest.mark.parametrize("app_env", [None, "production"])
def test_an_export_replays_with_no_configuration_at_all(services, tmp_path, monkeypatch, app_env):
    logged_journey(services)
    export = export_now(services, tmp_path / "log.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # no var/audit_key to fall back on
    unset = ("AUDIT_KEY", "DATABASE_URL", "INSTANCE_DIR", "PESEL_HASH_KEY", "SECRET_KEY")

    replayed = CliRunner().invoke(
        main,
        ["audit", "replay", "--export", str(export)],
        env={"APP_ENV": app_env, **dict.fromkeys(unset)},
    )

    assert replayed.exit_code == 0, replayed.output
    rows = len(export.read_text().splitlines())
    assert output_lines(replayed) == [
        REPLAY_LIMITS,
        f"replay: OK; 1 attempt(s), {rows} row(s) in … s",
    ]
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (
            lambda rows: [*rows[:3], {**rows[3], "target": "done"}, *rows[4:]],
            "seq 4: expected 'continue_new' to lead from 'error' to 'email_entry', logged 'done'",
        ),
        (
            lambda rows: [*rows[:2], {**rows[2], "outcome": "applied"}, *rows[3:]],
            "seq 3: expected 'verify' to be refused in 'error', logged it applied",
        ),
        (
            lambda rows: [{**rows[0], "flow_version": "f" * 64}, *rows[1:]],
            f"seq 1: flow version {'f' * 12}… is not among those this release keeps",
        ),
        (
            lambda rows: [*rows[:4], {**rows[4], "flow_version": "e" * 64}, *rows[5:]],
            f"seq 5: expected flow version {rows_version()[:12]}… (the attempt's first row's), "
            f"logged {'e' * 12}…",
        ),
    ],
    ids=["target", "outcome", "unknown-version", "version-changes"],
)
def test_an_export_that_departs_from_the_flow_names_where(services, tmp_path, change, finding):
    logged_journey(services)
    export = export_now(services, tmp_path / "log.jsonl")
    attempt_id = _rewrite(export, change)

    replayed = replay_offline(services, export)

    assert replayed.exit_code == 1
    assert output_lines(replayed)[0].startswith(
        f"FIRST BROKEN LINK: attempt {attempt_id}, {finding}"
    )
    assert output_lines(replayed)[1:] == [
        REPLAY_LIMITS,
        "replay: 1 attempt(s) with a problem; 1 attempt(s), 6 row(s) in … s",
    ]


@pytest.mark.parametrize("command", ["verify", "replay"])
def test_an_offline_check_refuses_a_file_that_is_not_an_export_or_an_attempt_named(
    services, tmp_path, command
):
    logged_journey(services)
    export = export_now(services, tmp_path / "log.jsonl")
    export.write_text(f"{export.read_text().splitlines()[0]}\nnot json\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    broken = offline(services, command, export)
    nothing = offline(services, command, empty)
    named = offline(services, command, export, "MIGRATION_000000000001")
    everything = offline(services, command, export, "--all")

    assert broken.exit_code == 1
    assert broken.output == f"Error: {export}: line 2 is not a row of an audit export\n"
    assert nothing.exit_code == 1
    assert nothing.output == f"Error: {empty}: the file holds no row of an audit export\n"
    for refused in (named, everything):
        assert refused.exit_code == 2
        assert "--export checks the whole file: name no attempt, no --all" in refused.output


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
    for personal in (HERMEGILDA.pesel, HERMEGILDA.family_name, "h@example.pl", "example"):
        assert personal not in dump
    # The PESEL hash has a key of its own: the auditor's key cannot test candidates against it.
    assert records[0]["pesel_hash"] != pesel_hash(services.settings.audit_key, HERMEGILDA.pesel)
    assert records[0]["pesel_hash"] == pesel_hash(services.settings.pesel_key, HERMEGILDA.pesel)
    assert '"email": "h***@e***.pl"' in records[-1]["detail"]


# -- what the auditor saw: the messages of each finding, and the commands' edges ----------


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


def test_cli_export_that_cannot_write_its_file_says_why_in_one_line(services, tmp_path):
    attempt = logged_journey(services)
    (tmp_path / "a-file").write_text("")
    missing_folder = tmp_path / "nonexistent" / "x.jsonl"
    under_a_file = tmp_path / "a-file" / "x.jsonl"

    no_folder = audit_cli(services, "export", "--output", str(missing_folder))
    not_a_folder = audit_cli(
        services, "export", "--attempt", attempt.id, "--output", str(under_a_file)
    )

    assert no_folder.exit_code == 1
    assert no_folder.output == (
        f"Error: cannot write {missing_folder}: No such file or directory\n"
    )
    assert not_a_folder.exit_code == 1
    assert not_a_folder.output == f"Error: cannot write {under_a_file}: Not a directory\n"
    assert not missing_folder.parent.exists()


def test_cli_export_to_a_folder_is_a_wrong_invocation(services, tmp_path):
    # click's own check of --output, before the log is read: exit 2, as docs/audit.md says.
    logged_journey(services)

    result = audit_cli(services, "export", "--output", str(tmp_path))

    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"Error: Invalid value for '--output': File {str(tmp_path)!r} is a directory."
    )


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
