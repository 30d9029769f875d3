"""The e-PLOZ directory changes while a migration is under way: nothing migrates that no
longer matches the person.

An import may block an account, give it another PESEL or name, add a second account under
the PESEL, or remove it, between the search and the steps that use its result (the worker's
``account_found``, the person's ``submit`` days later). The match is decided again, under a
share lock, at each of those steps.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from tests.factories import (
    ANNA,
    ANNA_EPLOZ,
    add_eploz_account,
    count,
    log_of,
    search_worker,
    submit,
    user,
)
from ueoz_migration.adapters.eploz import checked_row, import_accounts
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import (
    EPLOZ_REMOVED,
    EplozAccount,
    OutboxMessage,
    UeozAccount,
    VerificationLink,
)
from ueoz_migration.journey import EventRefused

CHANGES = {
    "blocked": {"status": "blocked"},
    "given another PESEL": {"pesel": "97040117247"},
    "renamed": {"last_name": "NOWAK"},
    "removed by a full import": {"status": EPLOZ_REMOVED},
}


def change_account(services, account_id: int, values: dict) -> None:
    with transaction(services.sessions) as session:
        session.execute(update(EplozAccount).where(EplozAccount.id == account_id).values(**values))


def in_email_entry(services):
    account_id = add_eploz_account(services)
    journey = services.journey
    attempt = journey.start(ANNA, actor=user())
    journey.fire(attempt.id, "account_found", actor=user(), eploz_account_id=account_id)
    journey.fire(attempt.id, "create_account", actor=user())
    return attempt, account_id


@pytest.mark.parametrize("change", CHANGES)
def test_an_account_changed_after_the_search_does_not_migrate_on_submit(services, change):
    attempt, account_id = in_email_entry(services)
    change_account(services, account_id, CHANGES[change])

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id)

    assert refused.value.reason == "eploz_changed"
    assert services.journey.get(attempt.id).state == "email_entry"
    assert count(services, UeozAccount) == 0
    assert count(services, OutboxMessage) == 0
    assert count(services, VerificationLink) == 0
    last = log_of(services, attempt.id)[-1]
    assert (last.event, last.outcome) == ("submit", "rejected")
    assert "eploz_changed" in last.detail


def test_a_second_account_under_the_pesel_stops_the_migration_on_submit(services):
    attempt, _ = in_email_entry(services)
    add_eploz_account(services, login="amicsokol2")

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id)

    assert refused.value.reason == "eploz_changed"
    assert count(services, UeozAccount) == 0


def test_an_unchanged_account_migrates_with_its_login_and_roles(services):
    attempt, account_id = in_email_entry(services)
    # An import that only touches other fields (here the e-mail) changes nothing that matters.
    change_account(services, account_id, {"email": "nowy@csioz.pl"})

    submit(services, attempt.id)

    with services.sessions() as session:
        (account,) = session.query(UeozAccount).all()
        assert (account.login, account.roles) == ("amicsokol", "P1:LEKARZ;GABINET:ADMIN")
        assert account.eploz_account_id == account_id
    # The log keeps the address masked down to the domain's first letter.
    assert json.loads(log_of(services, attempt.id)[-1].detail) == {"email": "a***@e***.pl"}


def test_an_account_blocked_between_search_and_record_is_searched_again(services):
    account_id = add_eploz_account(services)
    journey = services.journey
    attempt = journey.start(ANNA, actor=user())
    # The worker read the directory (account active) and is about to record what it found;
    # meanwhile an import blocks the account.
    change_account(services, account_id, {"status": "blocked"})

    with pytest.raises(EventRefused) as refused:
        journey.fire(attempt.id, "account_found", actor=user(), eploz_account_id=account_id)

    assert refused.value.reason == "conflict"
    assert journey.get(attempt.id).state == "searching"
    # The next search sees the blocked account and says so.
    search_worker(services).run_once()
    after = journey.get(attempt.id)
    assert (after.state, after.event_code) == ("error", 205)


def test_an_import_under_way_is_waited_for_and_all_of_it_seen(services):
    """An import that updates the account and adds a second one under the PESEL, committing
    while the person presses Zakończ: the step waits for it and sees both changes."""
    attempt, account_id = in_email_entry(services)
    outcome: list[object] = []

    def press_finish() -> None:
        try:
            submit(services, attempt.id)
            outcome.append("migrated")
        except EventRefused as refused:
            outcome.append(refused.reason)

    with transaction(services.sessions) as session:  # the import, still under way
        session.execute(
            update(EplozAccount).where(EplozAccount.id == account_id).values(email="nowy@csioz.pl")
        )
        second = {**ANNA_EPLOZ, "login": "amicsokol2", "imported_at": datetime.now(UTC)}
        session.add(EplozAccount(**second))
        session.flush()
        person = threading.Thread(target=press_finish)
        person.start()
        person.join(timeout=1)  # it waits for the import's lock
        assert person.is_alive()
    person.join(timeout=30)

    assert outcome == ["eploz_changed"]
    assert count(services, UeozAccount) == 0


def test_another_account_that_now_matches_in_place_of_the_found_one_is_not_taken(services):
    attempt, account_id = in_email_entry(services)
    change_account(services, account_id, {"status": EPLOZ_REMOVED})  # a full import removed it
    add_eploz_account(services, login="amicsokol-nowy")  # and a new one came in its place

    with pytest.raises(EventRefused) as refused:
        submit(services, attempt.id)

    assert refused.value.reason == "eploz_changed"
    assert count(services, UeozAccount) == 0


def test_imports_and_steps_on_the_same_accounts_never_deadlock(services):
    # Two accounts under Anna's PESEL, and an export listing the later one first: each import
    # changes both while the worker's steps read them under a share lock. Locked in
    # different orders, PostgreSQL aborted one side as a deadlock every few imports (the
    # person saw an error page on Zakończ; the import failed).
    def export(version: int) -> list:
        return [
            checked_row(line, {**ANNA_EPLOZ, "login": login, "roles": f"P1:LEKARZ{version}"})
            for line, login in ((2, "zz-second"), (3, "aa-first"))
        ]

    import_accounts(services.sessions, export(0)[::-1], now=datetime.now(UTC))  # aa-first: lower id
    attempt = services.journey.start(ANNA, actor=user())
    with services.sessions() as session:
        (first,) = session.scalars(
            select(EplozAccount.id).where(EplozAccount.login == "aa-first")
        ).all()
    done, failures = threading.Event(), []

    def worker_steps() -> None:
        while not done.is_set():
            try:
                # Two accounts under the PESEL: the match (204) is not this account, so the
                # step is refused, after reading both under the share lock.
                services.journey.fire(
                    attempt.id, "account_found", actor=user(), eploz_account_id=first
                )
            except EventRefused:
                pass
            except Exception as error:  # a deadlock, say
                failures.append(type(error).__name__)

    workers = [threading.Thread(target=worker_steps) for _ in range(2)]
    for thread in workers:
        thread.start()
    try:
        for version in range(1, 61):
            try:
                import_accounts(services.sessions, export(version), now=datetime.now(UTC))
            except Exception as error:
                failures.append(type(error).__name__)
    finally:
        done.set()
        for thread in workers:
            thread.join()

    assert failures == []
    assert services.journey.get(attempt.id).state == "searching"
