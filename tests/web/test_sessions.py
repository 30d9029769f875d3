"""The server-side session: written when it changes, its idle expiry moved on once a minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from ueoz_migration.db.models import WebSession
from ueoz_migration.web import SESSION_IDLE_LIFETIME
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
