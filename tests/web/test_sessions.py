"""The server-side session: written when it changes, its idle expiry moved on once a minute."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from ueoz_migration.db.models import Attempt, WebSession
from ueoz_migration.web import SESSION_IDLE_LIFETIME, migration
from ueoz_migration.web.sessions import REFRESH_AFTER


def stored_expiry(services) -> datetime:
    with services.sessions() as db:
        expires_at = db.scalars(select(WebSession.expires_at)).one()
    return expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)


def age_the_session(services, by: timedelta) -> datetime:
    """Pretend the session was last stored ``by`` ago; return its new expiry."""
    earlier = datetime.now(UTC) + SESSION_IDLE_LIFETIME - by
    with services.sessions() as db, db.begin():
        db.execute(update(WebSession).values(expires_at=earlier))
    return stored_expiry(services)


def test_polling_the_status_does_not_write_an_unchanged_session(browser, start_attempt, services):
    browser.hold(start_attempt().id)
    browser.get("/migracja/status")
    before = stored_expiry(services)

    answer = browser.get("/migracja/status")

    assert answer.json == {"state": "searching"}
    assert "Set-Cookie" not in answer.headers
    assert stored_expiry(services) == before


def test_an_idle_session_is_extended_once_its_expiry_is_a_minute_old(
    browser, start_attempt, services
):
    browser.hold(start_attempt().id)
    before = age_the_session(services, REFRESH_AFTER + timedelta(seconds=5))

    answer = browser.get("/migracja/status")

    assert answer.json == {"state": "searching"}
    assert "ueoz_session=" in answer.headers["Set-Cookie"]
    assert stored_expiry(services) - before >= REFRESH_AFTER


def test_a_changed_session_is_written_at_once(browser, start_attempt, services):
    browser.hold(start_attempt().id)
    browser.get("/migracja/status")

    browser.language("en")  # changes the session, well within the minute

    assert "Searching for your account" in browser.text("/migracja")


def while_a_poll_holds_the_session(app, monkeypatch, cookie: str, action: Callable[[], None]):
    """Run ``action`` after a status poll has read the session and before it answers.

    The poll is due to refresh the session (its expiry is over a minute old), so it writes
    when it ends: the moment a stale copy could overwrite what ``action`` did.
    """
    read, done = threading.Event(), threading.Event()
    real = migration.state_in_session

    def held() -> str | None:
        state = real()
        read.set()
        done.wait(10)
        return state

    monkeypatch.setattr(migration, "state_in_session", held)
    poller, answers = app.test_client(), []
    poller.set_cookie("ueoz_session", cookie)
    thread = threading.Thread(target=lambda: answers.append(poller.get("/migracja/status")))
    thread.start()
    assert read.wait(10)
    action()
    done.set()
    thread.join(10)
    monkeypatch.setattr(migration, "state_in_session", real)
    return answers[0]


def test_a_logout_is_not_undone_by_a_request_that_read_the_session_before_it(
    app, browser, start_attempt, services, monkeypatch
):
    browser.hold(start_attempt().id)
    token = browser.token()
    age_the_session(services, REFRESH_AFTER + timedelta(seconds=5))
    old_cookie = browser.client.get_cookie("ueoz_session").value

    pages = []
    poll = while_a_poll_holds_the_session(
        app, monkeypatch, old_cookie, lambda: pages.append(browser.post("/logout", token=token))
    )

    assert poll.json == {"state": "searching"}  # answered from what it had read
    assert "Wylogowano." in pages[0].get_data(as_text=True)
    assert browser.get("/migracja/status").status_code == 404  # this browser: logged out
    stale = app.test_client()
    stale.set_cookie("ueoz_session", old_cookie)
    assert stale.get("/migracja/status").status_code == 404  # and the old id is dead


def test_a_language_chosen_in_one_tab_survives_a_poll_from_another(
    app, browser, start_attempt, services, monkeypatch
):
    browser.hold(start_attempt().id)
    browser.get("/migracja")
    age_the_session(services, REFRESH_AFTER + timedelta(seconds=5))
    cookie = browser.client.get_cookie("ueoz_session").value

    while_a_poll_holds_the_session(app, monkeypatch, cookie, lambda: browser.language("en"))

    assert "Searching for your account" in browser.text("/migracja")


#: operations.md: "a web session ends after 30 minutes without a request".
IDLE_LIMIT = timedelta(minutes=30)


def last_request_ago(services, idle: timedelta) -> None:
    """Move the stored session's expiry back, as if its last request had been ``idle`` ago."""
    expires_at = stored_expiry(services)
    with services.sessions() as db, db.begin():
        db.execute(update(WebSession).values(expires_at=expires_at - idle))


def state_of(services, attempt_id) -> str:
    with services.sessions() as db:
        return db.scalars(select(Attempt.state).where(Attempt.id == attempt_id)).one()


def test_a_session_idle_for_just_under_30_minutes_still_holds_the_migration(
    browser, start_attempt, services
):
    browser.hold(start_attempt().id)
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in browser.text("/migracja")
    last_request_ago(services, IDLE_LIMIT - timedelta(minutes=1))

    page = browser.get("/migracja")

    assert page.status_code == 200
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in page.get_data(as_text=True)
    # The request counts: the 30 minutes start again from it.
    assert stored_expiry(services) > datetime.now(UTC) + IDLE_LIMIT - timedelta(minutes=1)


def test_a_session_idle_for_over_30_minutes_has_ended(browser, start_attempt, services):
    attempt = start_attempt()
    browser.hold(attempt.id)
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in browser.text("/migracja")
    last_request_ago(services, IDLE_LIMIT + timedelta(seconds=1))

    answer = browser.get("/migracja")

    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    start = browser.get("/").get_data(as_text=True)
    assert "<h1>Zaloguj się do Systemu</h1>" in start
    assert "Zaloguj się, aby rozpocząć lub kontynuować migrację konta." in start
    assert browser.get("/migracja/status").status_code == 404
    assert state_of(services, attempt.id) == "searching"  # the attempt waits for the next login


def test_a_form_sent_after_the_session_ended_changes_nothing(browser, start_attempt, services):
    attempt = start_attempt("found")
    browser.hold(attempt.id)
    token = browser.token()  # the found screen, its "Utwórz konto w UEOZ" button
    last_request_ago(services, IDLE_LIMIT + timedelta(minutes=1))

    answer = browser.post("/migracja/create_account", token=token)

    page = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "<h1>Formularz wygasł</h1>" in page
    assert "sesja wygasła" in page and "Nic nie zostało zmienione." in page
    assert state_of(services, attempt.id) == "found"
