"""`ueoz-migration retention purge`: an ended attempt's personal data goes, its story stays."""

from __future__ import annotations

import threading
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import select
from stdnum.pl import pesel

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
from ueoz_migration.db.models import (
    EPLOZ_REMOVED,
    Attempt,
    EplozAccount,
    OutboxMessage,
    UeozAccount,
    VerificationLink,
)
from ueoz_migration.domain.identity import Person
from ueoz_migration.journey import utcnow
from ueoz_migration.retention import PERSONAL_DATA, purge
from ueoz_migration.workers.outbox import OutboxSender

RETENTION = timedelta(days=90)
HERMEGILDA_EPLOZ = {
    "login": "hdligemreh",
    "pesel": HERMEGILDA.pesel,
    "first_name": "HERMEGILDA",
    "last_name": "DLIGEMREH",
    "email": "h@example.pl",
}
EMAIL = "anna@example.pl"


def cli(services, *args: str, **environ: str):
    return CliRunner().invoke(main, list(args), env=dict(services.settings.raw) | environ)


def migrated(services, person=ANNA, email=EMAIL) -> Attempt:
    """A whole migration: found, account made, address given, e-mail sent, link followed."""
    attempt = services.journey.start(person, actor=user(), domain_system="P1")
    search_worker(services).run_once()
    services.journey.fire(attempt.id, "create_account", actor=user())
    submit(services, attempt.id, email)
    token = link_token(services, attempt.id)
    OutboxSender.from_settings(services.settings, services.sessions).send_due()
    return services.journey.fire(attempt.id, "verify", actor=user(), token=token)


def cancelled_after_submit(services, person=HERMEGILDA, email="h@example.pl") -> Attempt:
    """Found, account made and address given, then Anuluj before the link came."""
    attempt = services.journey.start(person, actor=user(), domain_system="P1")
    search_worker(services).run_once()
    services.journey.fire(attempt.id, "create_account", actor=user())
    submit(services, attempt.id, email)
    services.journey.fire(attempt.id, "change_email", actor=user())
    return services.journey.fire(attempt.id, "cancel", actor=user())


def row(services, model, key):
    with services.sessions() as session:
        return session.get(model, key)


def rows(services, model, *where):
    with services.sessions() as session:
        return session.scalars(select(model).where(*where)).all()


def everything_text(services) -> str:
    """Every value of every purgeable column, as one text to search for a person in.

    But the e-PLOZ directory's: the accounts e-PLOZ lists are its data, kept as it lists them.
    """
    values = []
    with services.sessions() as session:
        for part in PERSONAL_DATA:
            if part.table is EplozAccount:
                continue
            for name in part.emptied:
                column = getattr(part.table, name)
                values += [str(v) for v in session.scalars(select(column))]
    return " ".join(values)


def test_a_sent_e_mail_keeps_its_recipient_masked_and_no_body(services):
    add_eploz_account(services)
    attempt = services.journey.start(ANNA, actor=user(), domain_system="P1")
    search_worker(services).run_once()
    services.journey.fire(attempt.id, "create_account", actor=user())
    submit(services, attempt.id, EMAIL)

    OutboxSender.from_settings(services.settings, services.sessions).send_due()

    [message] = rows(services, OutboxMessage)
    assert message.sent_at is not None
    assert (message.recipient, message.body) == ("a***@example.pl", "")


def test_a_purge_empties_an_ended_attempts_personal_data_and_keeps_its_story(services):
    add_eploz_account(services)
    add_eploz_account(services, **HERMEGILDA_EPLOZ)
    done = migrated(services)
    cancelled = cancelled_after_submit(services)
    verified = rows(services, UeozAccount, UeozAccount.id == done.ueoz_account_id)[0]
    assert cli(services, "audit", "verify", "--all").exit_code == 0

    report = purge(services.sessions, older_than=RETENTION, now=utcnow() + RETENTION * 1.01)

    assert report.attempts == 2
    for attempt_id in (done.id, cancelled.id):
        attempt = row(services, Attempt, attempt_id)
        assert attempt.purged_at is not None
        assert (attempt.given_names, attempt.family_name, attempt.date_of_birth) == ("", "", None)
        assert (attempt.email, attempt.email_prefill) == (None, None)
    assert row(services, Attempt, done.id).pesel == "********342"
    assert row(services, Attempt, cancelled.id).pesel == "********247"
    assert {link.email for link in rows(services, VerificationLink)} == {""}
    assert {(m.recipient, m.body) for m in rows(services, OutboxMessage)} == {("", "")}
    # The unverified account the cancelled attempt left is emptied; the verified one is the
    # person's UEOZ account, which retention does not end.
    [left] = rows(services, UeozAccount, UeozAccount.id == cancelled.ueoz_account_id)
    assert (left.pesel, left.given_names, left.email, left.eploz_account_id) == (
        "********247", "", "", None,
    )  # fmt: skip
    kept = rows(services, UeozAccount, UeozAccount.id == done.ueoz_account_id)[0]
    assert (kept.pesel, kept.email, kept.given_names) == (
        verified.pesel, verified.email, verified.given_names,
    )  # fmt: skip
    text = everything_text(services).replace(verified.pesel, "").replace(verified.email, "")
    text = text.replace(verified.given_names, "").replace(verified.family_name, "")
    for personal in (HERMEGILDA.pesel, "h@example.pl", "DLIGEMREH", ANNA.pesel[:8]):
        assert personal not in text
    # The auditors' checks read nothing the purge took.
    for command in (("audit", "verify", "--all"), ("audit", "replay", "--all")):
        result = cli(services, *command)
        assert result.exit_code == 0, result.output


def test_the_helpdesk_says_the_data_was_purged_and_still_tells_the_story(services):
    add_eploz_account(services)
    attempt = services.journey.start(HERMEGILDA, actor=user(), domain_system="P1")
    search_worker(services).run_once()  # no e-PLOZ account under her PESEL: code 201
    attempt = row(services, Attempt, attempt.id)
    services.journey.fire(attempt.id, "cancel", actor=user())
    purge(services.sessions, older_than=RETENTION, now=utcnow() + RETENTION * 2)

    result = cli(services, "helpdesk", "lookup", attempt.event_number, "--pesel-last3", "247")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "personal data  purged (RETENTION_DAYS after the attempt ended" in out
    assert "e-PLOZ accounts under this PESEL: not looked up (the attempt's personal data was " \
        "purged, its PESEL with it)" in out  # fmt: skip
    assert "HERMEGILDA" not in out and "name (node)" not in out
    assert "PESEL          ********247" in out
    assert "search_failed" in out and "cancel" in out  # the log, whole
    # Wrong digits still get the same answer as an unknown number.
    wrong = cli(services, "helpdesk", "lookup", attempt.event_number, "--pesel-last3", "248")
    assert wrong.exit_code == 1


def test_an_attempt_not_ended_long_enough_or_still_open_is_left_alone(services):
    add_eploz_account(services)
    done = migrated(services)
    open_ = services.journey.start(HERMEGILDA, actor=user(), domain_system="P1")

    # 89 days after Anna's migration ended; and Hermegilda's attempt never ended at all.
    report = purge(services.sessions, older_than=RETENTION, now=utcnow() + timedelta(days=89))
    assert report.attempts == 0
    report = purge(services.sessions, older_than=RETENTION, now=utcnow() + timedelta(days=400))
    assert report.attempts == 1

    assert row(services, Attempt, done.id).purged_at is not None
    assert row(services, Attempt, open_.id).given_names == "HERMEGILDA"


def test_a_purge_run_again_finds_nothing_left_to_do(services):
    add_eploz_account(services)
    migrated(services)
    later = utcnow() + RETENTION * 2

    first = cli(services, "retention", "purge", RETENTION_DAYS="0.5")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("purged the personal data of 0 ended attempt(s)")
    assert purge(services.sessions, older_than=RETENTION, now=later).attempts == 1
    again = purge(services.sessions, older_than=RETENTION, now=later)

    assert again.attempts == 0 and sum(again.rows.values()) == 0


def test_the_cli_purges_what_retention_days_says(services):
    add_eploz_account(services)
    done = migrated(services)
    with transaction(services.sessions) as session:  # ended three days ago
        session.get(Attempt, done.id).updated_at -= timedelta(days=3)

    kept = cli(services, "retention", "purge", RETENTION_DAYS="4")
    purged = cli(services, "retention", "purge", RETENTION_DAYS="2")

    assert kept.stdout.startswith("purged the personal data of 0 ended attempt(s)")
    assert purged.exit_code == 0, purged.output
    assert purged.stdout.startswith("purged the personal data of 1 ended attempt(s) (rows: ")
    assert "attempts 1" in purged.stdout and "verification_links 1" in purged.stdout


def test_a_person_back_after_the_purge_migrates_again_on_the_emptied_account(services):
    add_eploz_account(services, **HERMEGILDA_EPLOZ)
    cancelled = cancelled_after_submit(services)
    purge(services.sessions, older_than=RETENTION, now=utcnow() + RETENTION * 2)

    back = migrated(services, HERMEGILDA, "hermegilda@example.pl")

    assert back.state == "done"
    [account] = rows(services, UeozAccount)
    assert account.id == cancelled.ueoz_account_id  # one account per PESEL, taken up again
    assert (account.pesel, account.email, account.login) == (
        HERMEGILDA.pesel, "hermegilda@example.pl", "hdligemreh",
    )  # fmt: skip


def test_a_removed_e_ploz_account_goes_with_the_last_attempt_that_found_it(services):
    eploz = add_eploz_account(services, login="hdligemreh", pesel=HERMEGILDA.pesel,
                              first_name="HERMEGILDA", last_name="DLIGEMREH")  # fmt: skip
    attempt = services.journey.start(HERMEGILDA, actor=user(), domain_system="P1")
    search_worker(services).run_once()
    services.journey.fire(attempt.id, "cancel", actor=user())
    with transaction(services.sessions) as session:  # eploz import --full no longer lists it
        session.get(EplozAccount, eploz).status = EPLOZ_REMOVED

    purge(services.sessions, older_than=RETENTION, now=utcnow() + RETENTION * 2)

    account = row(services, EplozAccount, eploz)
    assert (account.login, account.pesel, account.first_name, account.last_name) == (
        f"purged-{eploz}", "", "", "",
    )  # fmt: skip
    assert row(services, Attempt, attempt.id).eploz_account_id == eploz  # the story's link


def test_purges_on_every_instance_at_once_take_each_attempt_once(services):
    for number in range(6):
        stem = f"870427{number:04d}"
        person = Person("Jan", "Nowak", ANNA.date_of_birth, stem + pesel.calc_check_digit(stem))
        attempt = services.journey.start(person, actor=user(), domain_system="P1")
        services.journey.fire(attempt.id, "cancel", actor=user())
    later, reports, errors = utcnow() + RETENTION * 2, [], []
    barrier = threading.Barrier(3)

    def instance() -> None:
        barrier.wait()
        try:
            reports.append(purge(services.sessions, older_than=RETENTION, now=later, batch=2))
        except Exception as error:  # pragma: no cover - the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=instance) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(report.attempts for report in reports) == 6
    assert all(attempt.purged_at is not None for attempt in rows(services, Attempt))
