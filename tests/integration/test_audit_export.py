"""The audit export: written without personal data, compared with the log later, checked offline.

Offline, `audit verify --export` needs the key alone and `audit replay --export` no
configuration at all.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.audit_log import (
    audit_cli,
    delete_attempt_row,
    export_now,
    logged_journey,
    output_lines,
    replay,
    tamper,
    verify,
)
from tests.factories import ANNA, HERMEGILDA, user
from ueoz_migration.audit.chain import link_hash
from ueoz_migration.cli import main
from ueoz_migration.domain.privacy import pesel_hash
from ueoz_migration.flow import load_flow_file


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
