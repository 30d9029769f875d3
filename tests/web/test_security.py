"""Headers, sessions, the login's guard against open redirects, error and health pages."""

from __future__ import annotations

import html
import mailbox
import re
from datetime import timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import func, select, update

from tests.conftest import make_settings
from tests.factories import HERMEGILDA, add_eploz_account, link_token, submit, user
from ueoz_migration.bootstrap import Services
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import PendingLogin, VerificationLink, WebSession
from ueoz_migration.journey import Actor, utcnow
from ueoz_migration.web import create_app

from .conftest import Browser

RELAY_STATE = re.compile(r'name="RelayState" value="([^"]+)"')


def text_of(response):
    return html.unescape(response.get_data(as_text=True))


def test_every_response_carries_the_security_headers(client):
    for url in ("/", "/kontakt", "/no-such-page", "/healthz"):
        headers = client.get(url).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "base-uri 'none'" in csp
        assert "form-action 'self' http://127.0.0.1:5001" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "camera=()" in headers["Permissions-Policy"]
        assert len(headers["X-Request-Id"]) == 32
        assert "Strict-Transport-Security" not in headers


def test_no_screen_carries_an_inline_script_or_style(app, start_attempt, services):
    # The CSP allows scripts and styles from 'self' only: anything inline would not run, or
    # not show, in the person's browser.
    pages = list(_every_screen(app, start_attempt, services))

    shown = {name for name, _, _ in pages}
    states = set(services.journey.flow.states) - {"cancelled", "skipped"}  # sent on, no screen
    assert states <= shown, f"journey states never shown: {sorted(states - shown)}"
    for name, heading, response in pages:
        text = response.get_data(as_text=True)
        assert f"<h1>{heading}</h1>" in html.unescape(text), f"{name}: not the screen meant"
        inline = [tag for tag in re.findall(r"<script\b[^>]*>", text) if "src=" not in tag]
        assert inline == [], f"{name}: inline script {inline}"
        assert "<style" not in text, f"{name}: a <style> element"
        assert " style=" not in text, f"{name}: a style attribute"


def _every_screen(app, start_attempt, services):
    """Each page a person can reach, as (what it is, its heading, the response)."""
    journey = services.journey

    # Anna's migration, screen by screen, to its end through the e-mail's link.
    anna = Browser(app.test_client(), services)
    attempt = start_attempt("searching")
    anna.hold(attempt.id)
    yield "searching", "Wyszukiwanie Twojego konta", anna.get("/migracja")
    eploz_id = add_eploz_account(services)
    journey.fire(attempt.id, "account_found", actor=user(), eploz_account_id=eploz_id)
    yield "found", "Migracja danych do UEOZ", anna.get("/migracja")
    journey.fire(attempt.id, "create_account", actor=user())
    yield "email_entry", "Uzupełnij adres e-mail", anna.get("/migracja")
    refused = anna.post("/migracja/submit", {"email": "a@example.pl", "email_repeat": "b@x.pl"})
    assert "Adresy e-mail różnią się" in text_of(refused)
    yield "email_entry, refused", "Uzupełnij adres e-mail", refused
    submit(services, attempt.id)
    yield "awaiting_verification", "Weryfikacja adresu e-mail", anna.get("/migracja")
    token = link_token(services, attempt.id)
    elsewhere = app.test_client().get(f"/weryfikacja/{token}")  # a phone's mail app, say
    yield "link in another browser", "Potwierdź adres e-mail", elsewhere
    yield "done, by the link", "Konto UEOZ gotowe", anna.get(f"/weryfikacja/{token}")
    yield "done", "Konto UEOZ gotowe", anna.get("/migracja")
    journey.fire(attempt.id, "hand_off", actor=user(), client="P1")
    yield "handed_off", "Konto UEOZ gotowe", anna.get("/migracja")  # a tab left open
    yield "link used", "Link został już użyty", anna.get(f"/weryfikacja/{token}")
    yield (
        "link unknown",
        "Nieprawidłowy link weryfikacyjny",
        anna.get("/weryfikacja/not-a-real-token"),
    )

    # Hermegilda's: not found in e-PLOZ, her links retired and expired, then the migration.
    hermegilda = Browser(app.test_client(), services)
    attempt = start_attempt("error", person=HERMEGILDA)
    hermegilda.hold(attempt.id)
    yield "error", "Wystąpił błąd w trakcie weryfikacji konta", hermegilda.get("/migracja")
    journey.fire(attempt.id, "continue_new", actor=user())
    yield "email_entry, new account", "Uzupełnij adres e-mail", hermegilda.get("/migracja")
    submit(services, attempt.id, "hermegilda@example.pl")
    retired = link_token(services, attempt.id)
    journey.fire(attempt.id, "resend", actor=user())
    yield "link retired", "Ten link nie jest już ważny", hermegilda.get(f"/weryfikacja/{retired}")
    with transaction(services.sessions) as session:
        session.execute(update(VerificationLink).values(expires_at=utcnow() - timedelta(hours=1)))
    token = link_token(services, attempt.id)
    yield "link expired", "Link weryfikacyjny wygasł", hermegilda.get(f"/weryfikacja/{token}")
    resent = hermegilda.post(f"/weryfikacja/{token}/resend", token=hermegilda.token())
    yield "link resent", "Wysłaliśmy nowy link", resent
    journey.fire(attempt.id, "expire", actor=Actor.system())
    yield "expired", "Migracja wygasła", hermegilda.get("/migracja")

    # The login's pages, and where it stops.
    client = app.test_client()
    yield (
        "sign-in refused: client",
        "Nie można rozpocząć logowania",
        client.get("/oidc/authorize?client_id=NOPE&response_type=code&scope=openid"),
    )
    yield (
        "logout refused",
        "Nie można wylogować",
        client.get("/oidc/logout?id_token_hint=not.a.token"),
    )
    yield "logout confirmation", "Wylogować się z UEOZ?", client.get("/oidc/logout")
    page = client.get("/login")
    yield "to the node", "Przekierowanie do login.gov.pl", page
    relay_state = RELAY_STATE.search(page.get_data(as_text=True)).group(1)
    node_post = app.test_client()  # the node's cross-site post comes without our cookie
    yield (
        "back from the node",
        "Powrót z login.gov.pl",
        node_post.post("/saml/acs", data={"RelayState": relay_state}),
    )
    yield (
        "login failed: no artifact",
        "Niepełne lub błędne dane z Węzła Krajowego",
        client.post("/saml/acs", data={"RelayState": relay_state}),
    )
    yield (
        "login failed: unknown",
        "Nie rozpoznajemy tego logowania",
        client.get("/saml/acs?RelayState=nope"),
    )

    # The start page, the footer's pages, the error pages.
    for url, heading in (
        ("/", "Zaloguj się do Systemu"),
        ("/czym-jest-ueoz", "Czym jest UEOZ?"),
        ("/pomoc", "Pomoc"),
        ("/warunki-korzystania", "Warunki korzystania z serwisu"),
        ("/polityka-prywatnosci", "Polityka prywatności"),
        ("/deklaracja-dostepnosci", "Deklaracja dostępności"),
        ("/mapa-strony", "Mapa strony"),
        ("/kontakt", "Skontaktuj się z nami"),
        ("/logowanie-login-gov-pl", "Logowanie za pośrednictwem login.gov.pl"),
        ("/no-such-page", "Nie znaleziono strony"),
    ):
        yield url, heading, client.get(url)
    yield "no CSRF token", "Formularz wygasł", client.post("/logout")


def test_the_session_lives_in_the_database_behind_an_httponly_lax_cookie(
    browser, start_attempt, services
):
    browser.hold(start_attempt("found").id)

    response = browser.get("/migracja")

    cookie = browser.client.get_cookie("ueoz_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    assert not cookie.secure  # not production
    assert response.status_code == 200
    with services.sessions() as session:
        (stored,) = session.scalars(select(WebSession)).all()
    assert stored.id == cookie.value
    assert b"Anna" not in stored.data  # only the attempt's id, never the person's data


def test_a_forged_session_cookie_opens_nothing(app, browser, start_attempt, services):
    attempt = start_attempt("found")
    browser.hold(attempt.id)
    assert "Odnaleźliśmy Twoje dane" in browser.text("/migracja")  # a live session to find
    forger = app.test_client()
    forger.set_cookie("ueoz_session", "made-up-session-id")

    response = forger.get("/migracja")

    assert response.status_code == 302 and response.headers["Location"] == "/"
    start = text_of(forger.get("/migracja", follow_redirects=True))
    assert "<h1>Zaloguj się do Systemu</h1>" in start
    assert "Odnaleźliśmy" not in start and "Moje konto" not in start
    with services.sessions() as session:
        stored = dict(session.execute(select(WebSession.id, WebSession.data)).all())
    assert "made-up-session-id" not in stored
    decode = app.session_interface.serializer.decode
    holding = [sid for sid, data in stored.items() if decode(data).get("attempt_id")]
    assert holding == [browser.client.get_cookie("ueoz_session").value]


def test_production_sets_hsts_a_secure_cookie_and_hides_the_development_pages(
    tmp_path, database_url
):
    settings = make_settings(
        tmp_path,
        database_url,
        APP_ENV="production",
        SECRET_KEY="a production secret key of 32 bytes",
        AUDIT_KEY="a production audit key of 32 bytes!",
        MAIL_BACKEND="smtp",
        OIDC_KEYS_DIR=str(_signing_keys(tmp_path)),
        OIDC_SUBJECT_KEY="a-subject-key-for-the-production-tests",
        WK_NODE_URL="https://login.gov.pl",
        WK_NODE_CERT=str(_dev_cert(tmp_path)),
        WK_SP_SIGNING_KEY=str(tmp_path / "k.pem"),
        WK_SP_SIGNING_CERT=str(tmp_path / "c.pem"),
        WK_SP_ENCRYPTION_KEY=str(tmp_path / "k.pem"),
        WK_SP_ENCRYPTION_CERT=str(tmp_path / "c.pem"),
    )
    services = Services(settings)
    try:
        app = create_app(services=services)
        client = app.test_client()
        response = client.get("/")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert (
            "form-action 'self' https://login.gov.pl" in response.headers["Content-Security-Policy"]
        )
        assert app.config["SESSION_COOKIE_SECURE"] is True
        cookie = client.get("/jezyk/en").headers["Set-Cookie"]
        assert cookie.startswith("__Host-ueoz_session=")
        assert {"Secure", "HttpOnly", "Path=/", "SameSite=Lax"} <= {
            part.strip() for part in cookie.split(";")
        }
        assert "Domain=" not in cookie
        assert client.get("/dev/mail").status_code == 404
    finally:
        services.engine.dispose()


def _signing_keys(tmp_path):
    """A folder of signing keys, as an operator makes it (ueoz-migration keys rotate)."""
    from ueoz_migration.oidc.keys import SigningKeys

    SigningKeys(tmp_path / "oidc-keys").rotate(publish_ahead=timedelta(0))
    return tmp_path / "oidc-keys"


def _dev_cert(tmp_path):
    """A P-256 key and certificate on disk, as production configures them."""
    from ueoz_migration.adapters.wk.keys import dev_pair

    pair = dev_pair(tmp_path / "keys", "prod", "test")
    (tmp_path / "k.pem").write_bytes(pair.key_pem)
    (tmp_path / "c.pem").write_bytes(pair.cert_pem)
    return tmp_path / "c.pem"


def test_login_from_the_start_page_alone_has_no_system_to_return_to(client, services):
    # Not the first system of the configuration: nobody asked to go there.
    response = client.get("/login")

    assert response.status_code == 200
    with services.sessions() as session:
        (pending,) = session.scalars(select(PendingLogin)).all()
    assert (pending.domain_system, pending.return_url) == (None, None)


def test_login_takes_no_return_address_from_the_query(client, services):
    # The first release's /login?system=ID&return=URL: a return address in a link is no
    # longer read at all, so it can never become an open redirect.
    response = client.get(
        "/login", query_string={"system": "P1", "return": "https://evil.example/phish"}
    )

    text = text_of(response)
    assert response.status_code == 200
    assert 'href="https://evil' not in text and 'action="https://evil' not in text
    with services.sessions() as session:
        (pending,) = session.scalars(select(PendingLogin)).all()
    assert (pending.domain_system, pending.authorization_id) == (None, None)


def test_login_sends_the_browser_to_the_node_with_a_signed_request(client, services):
    response = client.get("/login")

    text = text_of(response)
    assert response.status_code == 200
    assert 'action="http://127.0.0.1:5001/login/SingleSignOnService"' in text
    assert 'name="SAMLRequest" value="' in text and 'name="RelayState" value="' in text
    assert 'src="/static/js/autosubmit.js"' in text
    assert ">Przejdź do login.gov.pl</button>" in text
    with services.sessions() as session:
        (pending,) = session.scalars(select(PendingLogin)).all()
    assert f'name="RelayState" value="{pending.relay_state}"' in text


def test_the_acs_refuses_an_unknown_relay_state_without_a_stack_trace(client):
    response = client.post("/saml/acs", data={"SAMLart": "AAQAAA==", "RelayState": "nope"})

    text = text_of(response)
    assert response.status_code == 400
    assert "<h1>Nie rozpoznajemy tego logowania</h1>" in text
    assert "Traceback" not in text


def test_another_site_cannot_end_a_migration_through_the_login_return_address(
    browser, start_attempt
):
    # A top-level GET from anywhere carries the SameSite=Lax cookie.
    browser.hold(start_attempt("found").id)

    response = browser.get("/saml/acs?RelayState=anything")

    assert response.status_code == 400
    assert "<h1>Nie rozpoznajemy tego logowania</h1>" in text_of(response)
    assert "Odnaleźliśmy Twoje dane" in browser.text("/migracja")  # still where it was


def test_a_relay_state_we_never_made_is_refused_before_the_database(client):
    for relay_state in ("a\x00b", "x" * 500, "../../etc", ""):
        response = client.get("/saml/acs", query_string={"RelayState": relay_state, "SAMLart": "x"})

        assert response.status_code == 400
        assert "<h1>Nie rozpoznajemy tego logowania</h1>" in text_of(response)


def test_metadata_is_served_as_saml_metadata(client):
    response = client.get("/saml/metadata")

    assert response.status_code == 200
    assert response.mimetype == "application/samlmetadata+xml"
    assert b"EntityDescriptor" in response.data


def _pending(services):
    with services.sessions() as session:
        return session.scalar(select(func.count()).select_from(PendingLogin))


@pytest.mark.parametrize(
    ("method", "url", "status", "polish", "english"),
    [
        ("get", "/no-such-page", 404, "Nie znaleziono strony", "Page not found"),
        ("delete", "/", 405, "Niedozwolona operacja", "Operation not allowed"),
    ],
)
def test_error_pages_speak_the_persons_language(client, method, url, status, polish, english):
    response = getattr(client, method)(url)
    assert response.status_code == status and f"<h1>{polish}</h1>" in text_of(response)

    client.get("/jezyk/en")
    response = getattr(client, method)(url)
    assert f"<h1>{english}</h1>" in text_of(response)


def test_a_form_too_large_to_take_says_so_and_how_to_go_on(browser, start_attempt):
    browser.hold(start_attempt("email_entry").id)

    response = browser.post("/migracja/submit", {"email": "a" * 100_000, "email_repeat": "a"})

    text = text_of(response)
    assert response.status_code == 413
    assert "Wysłane dane są zbyt duże" in text and "Wróć do formularza" in text
    assert "Sprawdź adres strony" not in text  # the advice of a bad address does not fit


def test_an_unexpected_error_shows_a_friendly_page(app, client):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = client.get("/boom")

    text = text_of(response)
    assert response.status_code == 500
    assert "<h1>Wystąpił błąd po naszej stronie</h1>" in text
    assert "secret detail" not in text and "Traceback" not in text
    assert response.headers["X-Request-Id"]


def test_health_and_readiness(client, services):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200

    with services.engine.begin() as connection:  # the upgrade has not run yet
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")

    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "schema not at head"

    with services.engine.begin() as connection:  # a newer release upgraded it first
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_next'")

    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["database"] == "schema of a newer release"


def test_dev_mail_lists_the_maildir_newest_first_with_masked_recipients(client, services):
    box = mailbox.Maildir(services.settings.maildir_path, create=True)
    for day, who, token in ((1, "anna@example.pl", "first"), (2, "jan@example.pl", "second")):
        message = EmailMessage()
        message["Subject"] = "UEOZ – potwierdź adres e-mail"
        message["To"] = who
        message["Date"] = f"Mon, 0{day} Jun 2026 10:00:00 +0000"
        message.set_content(f"Link: http://localhost/weryfikacja/{token}\n")
        box.add(message)

    text = text_of(client.get("/dev/mail"))

    assert text.index("j***@example.pl") < text.index("a***@example.pl")
    assert "anna@example.pl" not in text and "jan@example.pl" not in text
    assert 'href="http://localhost/weryfikacja/second"' in text
    assert "UEOZ – potwierdź adres e-mail" in text


def test_readiness_lists_open_flow_versions_this_release_cannot_run(client, services):
    from tests.factories import ANNA, put_on_flow_version, user

    attempt = services.journey.start(ANNA, actor=user())
    older = services.flow.source.replace("email_entry", "address_entry")  # a state renamed since
    version = put_on_flow_version(services, attempt.id, older)

    response = client.get("/readyz")

    # Still ready (every other attempt is served), and saying which version is not.
    assert response.status_code == 200
    assert response.get_json()["flows_not_runnable"] == [
        f"flow version {version[:12]} cannot run in this release: no screen for address_entry"
    ]
