"""The staff console through Flask's client: sign-in through the stand-in node (real
signatures), the role matrix, the helpdesk's look-up and actions, the auditors' checks, "who
looked at whom", the progress page; on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.factories import ANNA, HERMEGILDA, log_of, migrate, submit, user
from tests.web.nodelogin import at_node, text_of
from ueoz_migration.audit.replay import replay_log
from ueoz_migration.audit.verify import verify_chain
from ueoz_migration.console.staff import Role, Staff
from ueoz_migration.db.engine import snapshot
from ueoz_migration.db.models import Attempt, StaffView, TransitionLogEntry, WebSession
from ueoz_migration.domain.identity import Person
from ueoz_migration.journey import utcnow
from ueoz_migration.web import console

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Staff are people with a PESEL like everyone; these are nobody in the demo directory.
EWA = {
    "first_name": "Ewa",
    "last_name": "Pomocna",
    "pesel": "90010112349",
    "date_of_birth": "1990-01-01",
}
PAWEL = {
    "first_name": "Paweł",
    "last_name": "Audytor",
    "pesel": "85020254323",
    "date_of_birth": "1985-02-02",
}

PAGES = {  # every console page, and the roles it lets in
    ("GET", "/konsola/pomoc"): {Role.HELPDESK},
    ("GET", "/konsola/audyt"): {Role.AUDITOR},
    ("GET", "/konsola/audyt/kto-przegladal"): {Role.AUDITOR},
    ("GET", "/konsola/postep"): {Role.OPERATOR, Role.AUDITOR},
    ("POST", "/konsola/pomoc"): {Role.HELPDESK},
    ("POST", "/konsola/audyt/weryfikacja"): {Role.AUDITOR},
    ("POST", "/konsola/audyt/odtworzenie"): {Role.AUDITOR},
    ("POST", "/konsola/audyt/eksport"): {Role.AUDITOR},
}


def grant(services, person, *roles: Role) -> None:
    staff = Staff(services.sessions, services.settings.pesel_key)
    for role in roles:
        staff.grant(person["pesel"], role, by="test", now=utcnow())


def sign_in(web, node, person, start="/login/konsola"):
    """Log in to the console through the stand-in node, as a staff member's browser does."""
    post_back = at_node(web, node, web.get(start), person)
    return web.post("/saml/acs", data=post_back)


def token(web, page="/konsola/") -> str:
    match = CSRF.search(web.get(page).get_data(as_text=True))
    assert match, f"no form on {page}"
    return match.group(1)


def post(web, url, data=None, *, page="/konsola/"):
    return web.post(url, data={"csrf_token": token(web, page), **(data or {})})


def error_attempt(services, person=HERMEGILDA, code=208):
    attempt = services.journey.start(person, actor=user())
    return services.journey.fire(attempt.id, "search_failed", actor=user(), code=code)


def looks(services) -> list[StaffView]:
    with snapshot(services.sessions) as session:
        return list(session.scalars(select(StaffView).order_by(StaffView.id)))


def test_a_staff_member_signs_in_through_the_node_into_the_console_not_a_migration(
    services, web, node
):
    grant(services, EWA, Role.HELPDESK)

    answer = sign_in(web, node, EWA)

    assert answer.status_code == 303
    assert answer.headers["Location"] == "/konsola/"
    cookie = answer.headers.getlist("Set-Cookie")
    console_cookie = next(line for line in cookie if line.startswith("ueoz_console="))
    assert "HttpOnly" in console_cookie and "SameSite=Lax" in console_cookie
    # Its row ends after 15 minutes without a request.
    sid = console_cookie.split(";", 1)[0].split("=", 1)[1]
    with snapshot(services.sessions) as session:
        expires_at = session.scalar(select(WebSession.expires_at).where(WebSession.id == sid))
    assert timedelta(minutes=14) < expires_at - datetime.now(UTC) <= timedelta(minutes=15)
    page = text_of(web.get("/konsola/"))
    assert "Pomoc: wyszukaj próbę" in page
    assert "PESEL ********349" in page
    with snapshot(services.sessions) as session:
        assert session.scalar(select(Attempt.id)) is None  # no migration attempt started
    # The person's pages know nothing of it: no attempt, no logout of a migration.
    assert "Moje konto" not in text_of(web.get("/"))


def test_the_role_matrix_every_page_for_every_role_and_for_no_one(services, web, node):
    for role in Role:
        person = {**EWA}
        grant(services, person, role)
        sign_in(web, node, person)
        for (method, path), allowed in PAGES.items():
            if method == "GET":
                answer = web.get(path)
            else:
                answer = post(web, path, {"attempt": "x", "first": "2026-01-01", "last": "x"})
            if role in allowed:
                assert answer.status_code != 403, (role, path)
            else:
                assert answer.status_code == 403, (role, path)
                assert "Brak dostępu" in text_of(answer)
        Staff(services.sessions, services.settings.pesel_key).revoke(
            person["pesel"], role, by="test", now=utcnow()
        )

    # Signed in, but holding no role at all: 403 everywhere, the start included.
    assert web.get("/konsola/").status_code == 403
    for (method, path), _allowed in PAGES.items():
        if method == "GET":
            assert web.get(path).status_code == 403, path

    # Not signed in to the console: sent to its start, which offers the node login.
    anonymous = web.application.test_client()
    for (method, path), _allowed in PAGES.items():
        if method == "GET":
            answer = anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["Location"] == "/konsola/"
    assert "Zaloguj się przez login.gov.pl" in text_of(anonymous.get("/konsola/"))
    # A form without its CSRF token changes nothing and shows nothing.
    assert anonymous.post("/konsola/pomoc", data={"event_number": "x"}).status_code == 400


def test_a_refusal_is_logged_without_the_pesel(services, web, node, capsys):
    grant(services, EWA, Role.OPERATOR)
    sign_in(web, node, EWA)
    capsys.readouterr()

    assert web.get("/konsola/pomoc").status_code == 403

    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "console.refused" in text
    assert EWA["pesel"] not in text and "349" not in text.split("console.refused", 1)[1][:200]


def test_the_person_session_and_the_console_session_are_apart(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)

    # The person's own pages have a session of their own, with its own token; the
    # console's token does not pass there, nor theirs in the console.
    console_token = token(web, "/konsola/pomoc")
    person_token = CSRF.search(web.get("/").get_data(as_text=True))
    assert web.post("/logout", data={"csrf_token": console_token}).status_code == 400
    if person_token:
        answer = web.post(
            "/konsola/pomoc",
            data={"csrf_token": person_token.group(1), "event_number": "x", "pesel_last3": "1"},
        )
        assert answer.status_code == 400


def test_the_lookup_shows_nothing_until_the_digits_agree_and_says_the_same_for_both(
    services, web, node
):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = error_attempt(services)
    number = attempt.event_number

    wrong_digits = post(web, "/konsola/pomoc", {"event_number": number, "pesel_last3": "248"})
    unknown_number = post(
        web, "/konsola/pomoc", {"event_number": "MIGRATION_999999999999", "pesel_last3": "247"}
    )

    for answer in (wrong_digits, unknown_number):
        assert answer.status_code == 404
        page = text_of(answer)
        assert "Żadna próba nie pasuje do tego numeru zdarzenia i tych cyfr PESEL." in page
        assert "DLIGEMREH" not in page and attempt.id not in page
    alerts = [
        re.search(r'role="alert">(.*?)</div>', text_of(a), re.DOTALL).group(1).strip()
        for a in (wrong_digits, unknown_number)
    ]
    assert alerts[0] == alerts[1]
    # Nor can the story be opened by its id without the digits.
    assert web.get(f"/konsola/pomoc/proba/{attempt.id}").status_code == 404

    found = post(web, "/konsola/pomoc", {"event_number": number.lower(), "pesel_last3": "247"})

    assert found.status_code == 200
    page = text_of(found)
    assert "HERMEGILDA DLIGEMREH" in page
    assert "208: account found, first and last name both differ" in page
    assert "Often the PESEL in e-PLOZ belongs to someone else" in page  # what to do
    assert "********247" in page and HERMEGILDA.pesel not in page
    assert "<svg" in page and 'aria-labelledby="path-line"' in page
    # Who looked: two look-ups that matched nothing, one that matched; no PESEL in any.
    records = looks(services)
    assert [(r.purpose, r.attempt_id) for r in records] == [
        ("lookup", None),
        ("lookup", None),
        ("lookup", attempt.id),
    ]
    assert all(r.role == "helpdesk" for r in records)


def test_lookups_are_limited_per_staff_member_per_hour(services, web, node):
    services.settings = dataclasses.replace(services.settings, console_lookups_per_hour=2)
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = error_attempt(services)
    for digits in ("111", "222"):
        post(web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": digits})

    answer = post(
        web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "247"}
    )

    assert answer.status_code == 429
    assert "Osiągnięto limit 2 wyszukiwań na godzinę" in text_of(answer)
    assert "DLIGEMREH" not in text_of(answer)


def test_the_helpdesk_cancels_an_attempt_in_error_and_the_log_names_it(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = error_attempt(services)
    post(web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "247"})

    answer = post(
        web, f"/konsola/pomoc/proba/{attempt.id}/anuluj", page=f"/konsola/pomoc/proba/{attempt.id}"
    )

    assert answer.status_code == 303
    page = text_of(web.get(answer.headers["Location"]))
    assert "Próba anulowana" in page
    last = log_of(services, attempt.id)[-1]
    staff_id = (
        Staff(services.sessions, services.settings.pesel_key)
        .identify(Staff(services.sessions, services.settings.pesel_key).hash_of(EWA["pesel"]))
        .staff_id
    )
    assert (last.event, last.outcome, last.target, last.actor) == (
        "cancel",
        "applied",
        "cancelled",
        "helpdesk",
    )
    assert json.loads(last.detail) == {"staff": staff_id}
    with snapshot(services.sessions) as session:
        assert verify_chain(session, services.settings.audit_key).ok
        assert replay_log(session).ok
    assert [r.purpose for r in looks(services)][-2:] == ["cancel", "story"]


def test_the_helpdesk_resends_the_link_and_cancels_one_waiting_for_verification(
    services, web, node
):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = services.journey.start(ANNA, actor=user())
    attempt = services.journey.fire(attempt.id, "search_failed", actor=user(), code=201)
    services.journey.fire(attempt.id, "continue_new", actor=user())
    submit(services, attempt.id)
    post(web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "342"})
    story = f"/konsola/pomoc/proba/{attempt.id}"

    post(web, f"{story}/wyslij-ponownie", page=story)
    post(web, f"{story}/anuluj", page=story)

    rows = [(r.event, r.outcome, r.target, r.actor) for r in log_of(services, attempt.id)][-3:]
    assert rows == [
        ("resend", "applied", "awaiting_verification", "helpdesk"),
        # No cancel while waiting: the person's own way, taken for them.
        ("change_email", "applied", "email_entry", "helpdesk"),
        ("cancel", "applied", "cancelled", "helpdesk"),
    ]
    with snapshot(services.sessions) as session:
        assert verify_chain(session, services.settings.audit_key).ok
        assert replay_log(session).ok
    # The story now has no action to offer.
    assert "Brak działań" in text_of(web.get(story))


def test_a_change_needs_a_node_login_no_older_than_15_minutes(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = error_attempt(services)
    post(web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "247"})
    story = f"/konsola/pomoc/proba/{attempt.id}"
    with web.session_transaction(path="/konsola/") as session:
        session[console.LOGGED_IN_KEY] = (utcnow() - timedelta(minutes=16)).isoformat()

    answer = post(web, f"{story}/anuluj", page=story)

    assert answer.status_code == 200
    assert "Zaloguj się ponownie" in text_of(answer)
    assert log_of(services, attempt.id)[-1].event == "search_failed"  # nothing changed
    # A new node login, and back to the story: the action goes through.
    again = sign_in(web, node, EWA, start=f"/login/konsola?next={story}")
    assert again.headers["Location"] == story
    assert web.get(story).status_code == 200  # still open to them: no new look-up needed
    post(web, f"{story}/anuluj", page=story)
    assert log_of(services, attempt.id)[-1].event == "cancel"


def test_logging_out_ends_the_console_session(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)

    answer = post(web, "/konsola/wyloguj", page="/konsola/pomoc")

    assert answer.status_code == 303
    assert "Wylogowano z konsoli." in text_of(web.get("/konsola/"))
    assert web.get("/konsola/pomoc").status_code == 303  # to the start, to sign in again


def test_a_purged_attempt_shows_its_story_without_personal_data(services, web, node):
    from ueoz_migration.retention import purge

    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = error_attempt(services)
    services.journey.fire(attempt.id, "cancel", actor=user())
    purge(services.sessions, older_than=timedelta(0), now=utcnow() + timedelta(seconds=1))

    found = post(
        web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "247"}
    )

    page = text_of(found)
    assert found.status_code == 200
    assert "DLIGEMREH" not in page and "HERMEGILDA" not in page
    assert "********247" in page
    assert "Nie wyszukano: dane osobowe próby, w tym PESEL, zostały usunięte." in page
    assert "searching → error → cancelled" in page


def test_the_auditor_verifies_replays_and_exports_and_the_views_are_recorded(services, web, node):
    grant(services, PAWEL, Role.AUDITOR)
    sign_in(web, node, PAWEL)
    attempt = services.journey.start(ANNA, actor=user(), domain_system=None)
    migrate(services, attempt.id)

    whole = post(web, "/konsola/audyt/weryfikacja", {"attempt": ""}, page="/konsola/audyt")
    one = post(web, "/konsola/audyt/weryfikacja", {"attempt": attempt.id}, page="/konsola/audyt")
    replayed = post(
        web, "/konsola/audyt/odtworzenie", {"attempt": attempt.id}, page="/konsola/audyt"
    )

    assert "Wynik: w porządku." in text_of(whole)
    assert "verify: OK; 1 attempt(s)" in text_of(whole)
    assert "verify: OK; 1 attempt(s)" in text_of(one)
    assert "path: searching → found → email_entry → awaiting_verification → done" in text_of(
        replayed
    )
    today = datetime.now(UTC).date()
    export = post(
        web,
        "/konsola/audyt/eksport",
        {"first": (today - timedelta(days=1)).isoformat(), "last": today.isoformat()},
        page="/konsola/audyt",
    )
    lines = export.get_data(as_text=True).splitlines()
    assert export.headers["Content-Disposition"].startswith("attachment;")
    assert [json.loads(line)["event"] for line in lines] == [
        row.event for row in log_of(services, attempt.id)
    ]
    empty = post(
        web,
        "/konsola/audyt/eksport",
        {"first": "2020-01-01", "last": "2020-01-31"},
        page="/konsola/audyt",
    )
    assert empty.get_data() == b""
    # Who looked: verify and replay of one attempt, and the exports with their periods; not
    # the whole log's check, which shows no one's data.
    period = f"attempts started {(today - timedelta(days=1)).isoformat()}..{today.isoformat()}"
    assert [(r.purpose, r.attempt_id, r.role, r.detail) for r in looks(services)] == [
        ("verify", attempt.id, "auditor", ""),
        ("replay", attempt.id, "auditor", ""),
        ("export", None, "auditor", period),
        ("export", None, "auditor", "attempts started 2020-01-01..2020-01-31"),
    ]
    listed = text_of(web.get("/konsola/audyt/kto-przegladal"))
    assert "audyt: odtworzenie próby" in listed and attempt.id in listed
    assert ANNA.pesel not in listed and "Mickiewicz" not in listed


def test_an_auditor_names_an_attempt_that_does_not_exist(services, web, node):
    grant(services, PAWEL, Role.AUDITOR)
    sign_in(web, node, PAWEL)

    answer = post(
        web,
        "/konsola/audyt/odtworzenie",
        {"attempt": "MIGRATION_000000000777"},
        page="/konsola/audyt",
    )

    assert answer.status_code == 404
    assert "Żadna próba nie ma tego identyfikatora" in text_of(answer)


def test_the_auditor_sees_who_looked_at_an_attempt(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    grant(services, PAWEL, Role.AUDITOR)
    attempt = error_attempt(services)
    sign_in(web, node, EWA)
    post(web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "247"})
    web.get(f"/konsola/pomoc/proba/{attempt.id}")
    auditor = web.application.test_client()
    sign_in(auditor, node, PAWEL)

    page = text_of(auditor.get(f"/konsola/audyt/kto-przegladal?proba={attempt.event_number}"))

    rows = re.findall(r"<tr><th scope=\"row\">.*?</tr>", page)
    assert len(rows) == 2
    assert all("helpdesk" in row and attempt.id in row for row in rows)
    assert "pomoc: wyszukanie" in rows[1] and "pomoc: historia próby ponownie" in rows[0]
    assert "********349" in page  # the staff member, by id and masked PESEL
    assert HERMEGILDA.pesel not in page and "DLIGEMREH" not in page


def test_the_progress_page_counts_from_the_log(services, web, node):
    grant(services, EWA, Role.OPERATOR)
    sign_in(web, node, EWA)
    migrated = services.journey.start(ANNA, actor=user())
    migrate(services, migrated.id)
    error_attempt(services)  # 208
    waiting = Person("Jan", "Kowalski", date(1990, 1, 1), EWA["pesel"])
    services.journey.start(waiting, actor=user())  # searching: in the search queue

    page = text_of(web.get("/konsola/postep?dni=7"))

    funnel = re.search(r'<table class="data" id="funnel">.*?</table>', page, re.DOTALL).group(0)
    assert re.findall(r"<td>(\d+)</td>", funnel) == ["3", "1", "1", "1"]
    codes = re.search(r'<table class="data" id="codes">.*?</table>', page, re.DOTALL).group(0)
    assert re.search(r"<th scope=\"row\">208</th><td[^>]*>[^<]*</td><td>1</td>", codes)
    today = date.today().isoformat()
    assert re.search(rf"<th scope=\"row\">{today}</th><td>3</td><td>1</td>", page)
    assert page.count('src="data:image/svg+xml;base64,') == 3
    assert "Zweryfikowanych linków</th><td>1</td>" in page
    queues = re.search(r'<table class="data" id="queues">.*?</table>', page, re.DOTALL).group(0)
    assert "wyszukiwanie w e-PLOZ</th><td>1</td>" in queues
    # Anna's link e-mail was withdrawn unsent once she verified (no mail sender here).
    assert "wiadomości e-mail</th><td>0</td><td>–</td>" in queues


def test_a_revoked_role_ends_access_at_the_next_request(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    assert web.get("/konsola/pomoc").status_code == 200

    Staff(services.sessions, services.settings.pesel_key).revoke(
        EWA["pesel"], Role.HELPDESK, by="test", now=utcnow()
    )

    assert web.get("/konsola/pomoc").status_code == 403


@pytest.mark.parametrize("language", ["pl", "en"])
def test_the_console_speaks_polish_and_english(services, web, node, language):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)

    web.get(f"/konsola/jezyk/{language}")

    page = text_of(web.get("/konsola/pomoc"))
    assert ("Helpdesk: look up an attempt" in page) == (language == "en")
    assert ('lang="en"' in page.split(">", 2)[1]) == (language == "en")


def test_the_log_rows_of_an_action_name_no_one_but_the_staff_id(services, web, node):
    grant(services, EWA, Role.HELPDESK)
    sign_in(web, node, EWA)
    attempt = error_attempt(services)
    post(web, "/konsola/pomoc", {"event_number": attempt.event_number, "pesel_last3": "247"})
    post(
        web, f"/konsola/pomoc/proba/{attempt.id}/anuluj", page=f"/konsola/pomoc/proba/{attempt.id}"
    )

    with snapshot(services.sessions) as session:
        rows = session.scalars(
            select(TransitionLogEntry).where(TransitionLogEntry.actor == "helpdesk")
        ).all()
    assert len(rows) == 1
    text = " ".join(str(getattr(rows[0], column)) for column in ("detail", "request_id"))
    assert EWA["pesel"] not in text and "Pomocna" not in text
