"""The helpdesk's look-up: an event number and three PESEL digits, as a caller dictates them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from structlog.testing import capture_logs

from tests.factories import (
    ANNA,
    HERMEGILDA,
    add_eploz_account,
    link_token,
    search_worker,
    submit,
    user,
)
from ueoz_migration.cli import main
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import EplozAccount, OutboxMessage, UeozAccount
from ueoz_migration.domain.codes import GUIDE, EventCode
from ueoz_migration.domain.identity import Person
from ueoz_migration.domain.privacy import pesel_hash
from ueoz_migration.helpdesk import NO_MATCH, describe, format_utc_and_polish, lookup
from ueoz_migration.oidc.clients import Registration

DOC = Path(__file__).resolve().parents[2] / "docs" / "event-codes.md"
# Someone else, who migrated Anna's e-PLOZ account before her (code 206).
JAN = Person("JAN", "KOWALSKI", date(2002, 7, 8), "02070803628")
JAN_EMAIL = "jan.kowalski@example.pl"
HERMEGILDA_EPLOZ = {
    "login": "hdligemreh",
    "pesel": HERMEGILDA.pesel,
    "first_name": "HERMENEGILDA",
    "last_name": "DLIGEMREH",
    "email": "hdligemreh@example.pl",
    "roles": "P1:LEKARZ",
}
PESELS = (ANNA.pesel, HERMEGILDA.pesel, JAN.pesel)
EMAILS = ("amicsokol@csioz.pl", "anna@example.pl", HERMEGILDA_EPLOZ["email"], JAN_EMAIL)


def failed_search(services, person=HERMEGILDA, code=208):
    attempt = services.journey.start(person, actor=user("req-login"), domain_system="P1")
    return services.journey.fire(attempt.id, "search_failed", actor=user("req-search"), code=code)


def searched(services, person):
    """Start the person's attempt and let the search worker decide it, as in production."""
    attempt = services.journey.start(person, actor=user("req-login"), domain_system="P1")
    search_worker(services).run_once()
    return services.journey.get(attempt.id)


def helpdesk_cli(services, *args, **environ):
    return CliRunner().invoke(
        main, ["helpdesk", "lookup", *args], env=dict(services.settings.raw) | environ
    )


def shown(services, attempt, digits, **environ):
    result = helpdesk_cli(services, attempt.event_number, "--pesel-last3", digits, **environ)
    assert result.exit_code == 0, result.output
    assert_nothing_whole(result.output)  # the process log's line on standard error included
    return result.stdout


def facts_of(lines: list[str]) -> dict[str, str]:
    """``label  value`` lines (a value may wrap onto lines indented deeper) as a dict."""
    facts: dict[str, str] = {}
    base = len(lines[0]) - len(lines[0].lstrip())
    label = ""
    for line in lines:
        if not line.strip():
            break
        if len(line) - len(line.lstrip()) > base:
            facts[label] += " " + line.strip()
            continue
        label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        facts[label] = value
    return facts


def header(output: str) -> dict[str, str]:
    return facts_of(output.splitlines())


def eploz_accounts(output: str) -> list[dict[str, str]]:
    """The numbered blocks under the e-PLOZ heading, one dict each."""
    section = output.split("e-PLOZ accounts under this PESEL")[1].split("\n\n")[0]
    blocks = re.split(r"\n  \d+\. ", section)[1:]
    return [facts_of(("     " + block).splitlines()) for block in blocks]


def later_attempts(output: str) -> list[list[str]]:
    section = output.split("later attempts of this person: ")[1].split("\n\n")[0]
    return [re.split(r"\s{2,}", line.strip()) for line in section.splitlines()[2:]]


def assert_nothing_whole(output: str) -> None:
    """No PESEL and no e-mail address appears whole, whoever's it is."""
    for pesel in PESELS:
        assert pesel not in output
    for email in EMAILS:
        assert email not in output
    assert not re.search(r"(?<![0-9A-Za-z])\d{11}(?![0-9A-Za-z])", output)
    for address in re.findall(r"[^\s=]+@\S+", output):  # the log's detail: email=a***@…
        assert re.fullmatch(r"\S\*\*\*@\S+", address), address


def give_ueoz_account(services, owner: Person, eploz_id: int, email: str) -> int:
    now = datetime.now(UTC)
    with transaction(services.sessions) as session:
        account = UeozAccount(
            pesel=owner.pesel,
            pesel_hash=pesel_hash(services.settings.pesel_key, owner.pesel),
            given_names=owner.given_names,
            family_name=owner.family_name,
            login="amicsokol",
            email=email,
            email_verified_at=now,
            eploz_account_id=eploz_id,
            created_at=now,
        )
        session.add(account)
        session.flush()
        return account.id


def test_the_right_digits_show_the_attempt_its_code_and_its_log(services):
    attempt = failed_search(services)

    output = shown(services, attempt, "247")

    facts = header(output)
    assert facts["event number"] == attempt.event_number
    assert facts["event code"] == "208: account found, first and last name both differ"
    assert facts["what to do"] == EventCode(208).guidance
    assert facts["state"] == "error"
    assert facts["name (node)"] == "HERMEGILDA DLIGEMREH"
    assert facts["PESEL"] == "********247"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
        r"\((\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d CES?T Polish time\)",
        facts["created"],
    )
    assert facts["domain system"] == "P1"  # no DOMAIN_SYSTEMS: the recorded id alone
    assert "e-PLOZ accounts under this PESEL (the directory now): none" in output
    log = output.split("\nlog:\n")[1]
    assert "search_failed" in log
    assert "searching → error" in log
    assert attempt.event_number in log


def test_a_202_shows_both_first_names_to_compare(services):
    add_eploz_account(services, **HERMEGILDA_EPLOZ)
    attempt = searched(services, HERMEGILDA)
    assert attempt.event_code == 202

    output = shown(services, attempt, "247")

    assert header(output)["what to do"].startswith(
        "Compare the first name in e-PLOZ with the name on the national node"
    )
    assert "then the caller chooses Anuluj on the error screen" in header(output)["what to do"]
    assert "**Anuluj**" not in output  # the guide's Markdown, as plain text
    (account,) = eploz_accounts(output)
    assert account == {
        "login": "hdligemreh",
        "first name": "HERMENEGILDA (differs from the node's HERMEGILDA)",
        "last name": "DLIGEMREH (agrees)",
        "status": "active",
        "e-mail": "h***@example.pl",
        "migrated to": "no UEOZ account yet",
    }


def test_a_206_shows_the_login_and_the_account_that_took_it(services):
    eploz_id = add_eploz_account(services)  # Anna's: login amicsokol
    holder = give_ueoz_account(services, JAN, eploz_id, JAN_EMAIL)
    attempt = searched(services, ANNA)
    assert attempt.event_code == 206

    output = shown(services, attempt, "342")

    assert header(output)["event code"] == (
        "206: the e-PLOZ account was already migrated to another UEOZ account"
    )
    (account,) = eploz_accounts(output)
    assert account["login"] == "amicsokol"
    assert account["first name"] == "Anna (agrees)"
    assert account["last name"] == "MICKIEWICZ - SOKOLOWSKA (agrees)"
    assert account["e-mail"] == "a***@csioz.pl"
    assert account["migrated to"].startswith(
        f"UEOZ account {holder}, ANOTHER person's (escalate with this number; their data is "
        "not shown) created "
    )
    assert "KOWALSKI" not in output and "********628" not in output and "j***@" not in output
    assert re.search(
        r" created \S+ \S+ UTC \(.* Polish time\), e-mail verified \S+ \S+ UTC \(.* Polish time\)$",
        account["migrated to"],
    )


def test_an_open_error_attempt_shows_until_when_and_to_press_anuluj(services):
    attempt = failed_search(services)

    output = shown(services, attempt, "247")

    open_ = header(output)["open"]
    assert open_.startswith(f"yes, until {format_utc_and_polish(attempt.expires_at)}.")
    assert "shows this same error screen" in open_
    assert "must press Anuluj on the error screen, then log in again" in open_
    assert "later attempts of this person: none" in output


def test_an_ended_attempt_shows_the_later_attempt_that_reached_done(services):
    eploz_id = add_eploz_account(services, last_name="MICKIEWICZ")  # before her marriage
    first = searched(services, ANNA)
    assert first.event_code == 203
    services.journey.fire(first.id, "cancel", actor=user())
    with transaction(services.sessions) as session:  # e-PLOZ corrected
        session.get(EplozAccount, eploz_id).last_name = "Mickiewicz-Sokołowska"
    second = searched(services, ANNA)
    assert second.state == "found"
    services.journey.fire(second.id, "create_account", actor=user())
    submit(services, second.id)
    token = link_token(services, second.id)
    services.journey.fire(second.id, "verify", actor=user(), token=token)

    output = shown(services, services.journey.get(first.id), "342")

    facts = header(output)
    assert facts["state"] == "cancelled"
    assert facts["open"].startswith("no: ended (cancelled) ")
    assert "a new login starts a new attempt" in facts["open"]
    assert later_attempts(output) == [
        [second.id, "done", format_utc_and_polish(second.created_at), "-"],
    ]
    (account,) = eploz_accounts(output)
    assert account["last name"] == "Mickiewicz-Sokołowska (agrees)"
    assert re.match(r"UEOZ account \d+, this person's own: Anna Maria ", account["migrated to"])
    assert "e-mail a***@example.pl" in account["migrated to"]


def test_an_account_a_full_import_removed_is_shown_as_removed(services, tmp_path):
    # Hermegilda once found her account, then cancelled; e-PLOZ then gave her a second one
    # (204), and after the desk's escalation the operators loaded an export without the first.
    first = HERMEGILDA_EPLOZ | {"first_name": "HERMEGILDA"}
    add_eploz_account(services, **first)
    found = searched(services, HERMEGILDA)
    assert found.state == "found"
    services.journey.fire(found.id, "cancel", actor=user())
    add_eploz_account(services, **(first | {"login": "hdligemreh2"}))
    duplicates = searched(services, HERMEGILDA)
    assert duplicates.event_code == 204
    services.journey.fire(duplicates.id, "cancel", actor=user())
    export = tmp_path / "export.csv"
    export.write_text(
        "login,pesel,first_name,last_name,email,status,roles\n"
        f"hdligemreh2,{HERMEGILDA.pesel},HERMEGILDA,DLIGEMREH,{first['email']},active,P1:LEKARZ\n"
    )
    imported = CliRunner().invoke(
        main, ["eploz", "import", "--full", str(export)], env=dict(services.settings.raw)
    )
    assert "1 removed" in imported.output, imported.output

    output = shown(services, services.journey.get(duplicates.id), "247")

    assert (
        "e-PLOZ accounts under this PESEL (the directory now): 1 (and 1 removed by a full "
        "import)\n" in output
    )
    removed, kept = eploz_accounts(output)
    assert removed["login"] == "hdligemreh"
    assert removed["status"] == (
        "removed from e-PLOZ by a full import (the search no longer finds it)"
    )
    assert kept["login"] == "hdligemreh2"
    assert kept["status"] == "active"


def test_an_open_attempt_past_its_time_is_shown_as_over(services):
    attempt = failed_search(services)
    after = attempt.expires_at + timedelta(minutes=1)

    view = lookup(services.sessions, attempt.event_number, "247", clock=lambda: after)

    facts = header(describe(view, {}))
    assert facts["open"] == (
        f"no: its time ran out {format_utc_and_polish(attempt.expires_at)} (not yet recorded as "
        "expired); a new login starts a new attempt, which searches e-PLOZ again."
    )


def test_a_pesel_typed_as_the_number_is_refused_without_echoing_it(services):
    failed_search(services)

    refused = helpdesk_cli(services, HERMEGILDA.pesel, "--pesel-last3", "247")

    assert refused.exit_code == 2
    assert "Error: not an event number (MIGRATION_ and 12 digits" in refused.output
    assert HERMEGILDA.pesel not in refused.output
    assert "97040117" not in refused.output


def test_wrong_digits_and_an_unknown_number_get_the_same_answer(services):
    attempt = failed_search(services)

    wrong_digits = helpdesk_cli(services, attempt.event_number, "--pesel-last3", "248")
    unknown = helpdesk_cli(services, "MIGRATION_999999999999", "--pesel-last3", "247")

    assert wrong_digits.exit_code == unknown.exit_code == 1
    assert wrong_digits.stdout == unknown.stdout == ""
    # After the look-up's own log line (helpdesk.lookup, matched=false).
    assert wrong_digits.stderr.splitlines()[-1] == unknown.stderr.splitlines()[-1] == NO_MATCH
    assert "HERMEGILDA" not in wrong_digits.output


def test_a_number_read_out_in_lower_case_with_spaces_is_found(services):
    attempt = failed_search(services)
    spoken = attempt.event_number.lower().replace("_", "_ ")

    assert lookup(services.sessions, spoken, "247").attempt.id == attempt.id
    quoted = helpdesk_cli(services, spoken, "--pesel-last3", "247")
    assert quoted.exit_code == 0, quoted.output


def test_malformed_input_is_refused_with_what_the_form_should_be(services):
    attempt = failed_search(services)

    bad_number = helpdesk_cli(services, "MIGRATION_12", "--pesel-last3", "247")
    bad_digits = helpdesk_cli(services, attempt.event_number, "--pesel-last3", "24")

    assert bad_number.exit_code == bad_digits.exit_code == 2
    assert "MIGRATION_ and 12 digits" in bad_number.output
    assert "MIGRATION_12" not in bad_number.output
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


def test_the_docs_table_says_what_the_code_says():
    """docs/event-codes.md repeats domain/codes.py's GUIDE: a change to one needs the other."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows[int(cells[0])] = tuple(cells[1:])

    in_code = {
        int(code): (guide.meaning, guide.person_sees, guide.helpdesk)
        for code, guide in GUIDE.items()
    }
    assert rows == in_code
    assert set(GUIDE) == set(EventCode)


def test_the_answer_alone_goes_to_standard_output(services):
    # The desk may pipe or save the answer; in production the log line is JSON.
    attempt = failed_search(services)

    result = helpdesk_cli(services, attempt.event_number, "--pesel-last3", "247", LOG_JSON="1")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"event number   {attempt.event_number}\n")
    assert "helpdesk.lookup" not in result.stdout
    assert '"event": "helpdesk.lookup"' in result.stderr


def test_a_registered_domain_system_is_shown_by_its_name(services):
    attempt = failed_search(services)
    assert header(shown(services, attempt, "247"))["domain system"] == "P1"  # not registered

    services.clients.add(
        Registration("P1", "Platforma P1", redirect_uris=("https://p1.example/callback",))
    )

    assert header(shown(services, attempt, "247"))["domain system"] == "Platforma P1 (P1)"


def test_times_are_given_in_utc_and_in_polish_time():
    winter = datetime(2025, 1, 15, 23, 30, tzinfo=UTC)  # already the next day in Poland
    summer = datetime(2025, 7, 1, 10, 0, tzinfo=UTC)

    assert (
        format_utc_and_polish(winter)
        == "2025-01-15 23:30:00 UTC (2025-01-16 00:30:00 CET Polish time)"
    )
    assert format_utc_and_polish(summer) == "2025-07-01 10:00:00 UTC (12:00:00 CEST Polish time)"


def went_on_with_dalej(services, until: str):
    """Hermegilda's 208, then Dalej on the error screen, as far as ``until``."""
    add_eploz_account(services, **HERMEGILDA_EPLOZ | {"first_name": "HERMINA", "last_name": "X"})
    attempt = searched(services, HERMEGILDA)
    assert attempt.event_code == 208
    attempt = on_with_dalej(services, attempt, until, "hermegilda@example.pl")
    assert attempt.state == until
    return attempt


def test_after_dalej_to_a_verified_account_the_desk_is_not_told_to_log_in_again(services):
    attempt = went_on_with_dalej(services, "done")

    what_to_do = header(shown(services, attempt, "247"))["what to do"]

    assert what_to_do == (
        "The caller chose Dalej: a new UEOZ account, made without e-PLOZ data, with its "
        "e-mail address verified. Every login now skips the migration: logging in again will "
        "not bring the e-PLOZ account (hdligemreh), even once e-PLOZ is corrected; its login "
        "and roles were not carried over and have to be moved to the UEOZ account another way."
    )
    # ...and it is so: a new login is skipped, whatever e-PLOZ now says.
    with transaction(services.sessions) as session:
        account = session.query(EplozAccount).filter_by(login="hdligemreh").one()
        account.first_name, account.last_name = "HERMEGILDA", "DLIGEMREH"
    again = services.journey.start(HERMEGILDA, actor=user(), domain_system="P1")
    assert services.journey.get(again.id).state == "skipped"


def test_after_dalej_awaiting_verification_the_desk_learns_the_way_back(services):
    attempt = went_on_with_dalej(services, "awaiting_verification")

    what_to_do = header(shown(services, attempt, "247"))["what to do"]

    assert what_to_do == (
        "The caller chose Dalej: a new UEOZ account, made without e-PLOZ data, waits for its "
        "e-mail address to be verified; once it is, every login skips the migration and will "
        "not bring the e-PLOZ account (hdligemreh). Until then, to have it taken over once "
        "e-PLOZ is corrected, the caller chooses Zmień adres e-mail, then Anuluj on the e-mail "
        "form, and logs in again."
    )
    # ...and that way works: the new search finds the corrected account.
    services.journey.fire(attempt.id, "change_email", actor=user())
    services.journey.fire(attempt.id, "cancel", actor=user())
    with transaction(services.sessions) as session:
        account = session.query(EplozAccount).filter_by(login="hdligemreh").one()
        account.first_name, account.last_name = "HERMEGILDA", "DLIGEMREH"
    assert searched(services, HERMEGILDA).state == "found"


def test_after_dalej_at_the_email_form_the_desk_is_told_to_cancel_there(services):
    attempt = went_on_with_dalej(services, "email_entry")

    what_to_do = header(shown(services, attempt, "247"))["what to do"]

    assert what_to_do.startswith(
        "The caller chose Dalej, to a new UEOZ account without e-PLOZ data, and is at its "
        "e-mail form. To have the e-PLOZ account (hdligemreh) taken over once e-PLOZ is "
        "corrected, the caller chooses Anuluj on that form and logs in again"
    )


def on_with_dalej(services, attempt, until: str, email: str):
    """Dalej on the error screen, as far as ``until``."""
    services.journey.fire(attempt.id, "continue_new", actor=user())
    if until in {"awaiting_verification", "done"}:
        submit(services, attempt.id, email)
    if until == "done":
        services.journey.fire(
            attempt.id, "verify", actor=user(), token=link_token(services, attempt.id)
        )
    return services.journey.get(attempt.id)


def test_after_dalej_on_a_201_the_desk_is_told_it_was_the_right_way_on(services):
    attempt = on_with_dalej(services, searched(services, ANNA), "done", "anna@example.pl")
    assert attempt.event_code == 201

    what_to_do = header(shown(services, attempt, "342"))["what to do"]

    assert what_to_do.startswith(
        "If the caller never had an e-PLOZ account, Dalej was the right way on and nothing is "
        "left to do. If they had one: The caller chose Dalej"
    )
    assert "an e-PLOZ account the caller may have under another PESEL" in what_to_do


def test_after_dalej_on_a_206_the_desk_still_escalates(services):
    give_ueoz_account(services, JAN, add_eploz_account(services), JAN_EMAIL)
    attempt = on_with_dalej(services, searched(services, ANNA), "done", "anna@example.pl")
    assert attempt.event_code == 206

    what_to_do = header(shown(services, attempt, "342"))["what to do"]

    assert what_to_do == EventCode.ALREADY_MIGRATED.guidance
    assert what_to_do.endswith("Do not create duplicates; escalate.")


def test_after_dalej_on_a_207_nothing_in_e_ploz_needs_correcting(services):
    add_eploz_account(services)  # Anna's account, there all along: the directory was down
    attempt = failed_search(services, ANNA, code=207)
    attempt = on_with_dalej(services, attempt, "email_entry", "anna@example.pl")

    what_to_do = header(shown(services, attempt, "342"))["what to do"]

    assert what_to_do == (
        "The caller chose Dalej, to a new UEOZ account without e-PLOZ data, and is at its "
        "e-mail form. To have the e-PLOZ account (amicsokol) taken over, the caller chooses "
        "Anuluj on that form and logs in again; once the form is sent and the address "
        "verified, every login skips the migration."
    )


def test_the_desk_sees_what_became_of_the_link_e_mail(services):
    attempt = went_on_with_dalej(services, "awaiting_verification")

    assert header(shown(services, attempt, "247"))["link e-mail"].startswith(
        "to h***@example.pl, waiting to be sent since "
    )

    # The recipient's server refuses it for good: the caller waits for nothing.
    with transaction(services.sessions) as session:
        message = session.query(OutboxMessage).filter_by(attempt_id=attempt.id).one()
        message.tries, message.last_error = 1, "recipient refused: 550 5.1.1"
        message.failed_at = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)

    assert header(shown(services, attempt, "247"))["link e-mail"] == (
        "NOT DELIVERED to h***@example.pl (recipient refused: 550 5.1.1) at 2026-06-01 "
        "08:00:00 UTC (10:00:00 CEST Polish time): the caller checks the address, chooses "
        "Zmień adres e-mail and gives a good one"
    )

    with transaction(services.sessions) as session:
        message = session.query(OutboxMessage).filter_by(attempt_id=attempt.id).one()
        message.failed_at, message.sent_at = None, datetime(2026, 6, 1, 8, 5, tzinfo=UTC)

    assert header(shown(services, attempt, "247"))["link e-mail"] == (
        "sent to h***@example.pl at 2026-06-01 08:05:00 UTC (10:05:00 CEST Polish time)"
    )
