"""The helpdesk's look-up: an event number and three PESEL digits, as a caller dictates them."""

from __future__ import annotations

import re

from click.testing import CliRunner
from structlog.testing import capture_logs

from tests.factories import ANNA, HERMEGILDA, add_eploz_account, user
from ueoz_migration.cli import main
from ueoz_migration.helpdesk import NO_MATCH, lookup


def failed_search(services, person=HERMEGILDA, code=208):
    attempt = services.journey.start(person, actor=user("req-login"), domain_system="P1")
    return services.journey.fire(attempt.id, "search_failed", actor=user("req-search"), code=code)


def helpdesk_cli(services, *args):
    return CliRunner().invoke(main, ["helpdesk", "lookup", *args], env=dict(services.settings.raw))


def test_the_right_digits_show_the_attempt_its_code_and_its_log(services):
    attempt = failed_search(services)

    shown = helpdesk_cli(services, attempt.event_number, "--pesel-last3", "247")

    assert shown.exit_code == 0, shown.output
    facts = dict(
        re.split(r"\s{2,}", line, maxsplit=1)
        for line in shown.output.split("\nlog:\n")[0].splitlines()
        if "  " in line
    )
    assert facts["event number"] == attempt.event_number
    assert facts["event code"] == "208: account found, first and last name both differ"
    assert facts["state"] == "error"
    assert facts["name"] == "HERMEGILDA DLIGEMREH"
    assert facts["PESEL"] == "********247"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", facts["created"])
    assert facts["domain system"] == "Platforma P1 (demo) (P1)"
    log = shown.output.split("\nlog:\n")[1]
    assert "search_failed  searching → error" in log
    assert f"{attempt.event_number} / 208" in log
    assert HERMEGILDA.pesel not in shown.output


def test_wrong_digits_and_an_unknown_number_get_the_same_answer(services):
    attempt = failed_search(services)

    wrong_digits = helpdesk_cli(services, attempt.event_number, "--pesel-last3", "248")
    unknown = helpdesk_cli(services, "MIGRATION_999999999999", "--pesel-last3", "247")

    assert wrong_digits.exit_code == unknown.exit_code == 1
    assert wrong_digits.stderr == unknown.stderr == NO_MATCH + "\n"
    assert "HERMEGILDA" not in wrong_digits.output


def test_a_number_read_out_in_lower_case_with_spaces_is_found(services):
    attempt = failed_search(services)
    spoken = attempt.event_number.lower().replace("_", "_ ")

    assert lookup(services.sessions, spoken, "247").attempt.id == attempt.id


def test_malformed_input_is_refused_with_what_the_form_should_be(services):
    attempt = failed_search(services)

    bad_number = helpdesk_cli(services, "MIGRATION_12", "--pesel-last3", "247")
    bad_digits = helpdesk_cli(services, attempt.event_number, "--pesel-last3", "24")

    assert bad_number.exit_code == bad_digits.exit_code == 2
    assert "MIGRATION_ and 12 digits" in bad_number.output
    assert "exactly three digits" in bad_digits.output


def test_the_lookup_is_logged_with_a_masked_pesel_only(services):
    attempt = failed_search(services)
    add_eploz_account(services)
    failed_search(services, person=ANNA, code=203)

    with capture_logs() as logs:
        lookup(services.sessions, attempt.event_number, "247")
        lookup(services.sessions, attempt.event_number, "000")

    lookups = [entry for entry in logs if entry["event"] == "helpdesk.lookup"]
    assert [(entry["matched"], entry["event_number"]) for entry in lookups] == [
        (True, attempt.event_number),
        (False, attempt.event_number),
    ]
    assert lookups[0]["pesel"] == "********247"
    assert HERMEGILDA.pesel not in repr(logs)
