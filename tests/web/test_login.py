"""The login round trip: service → stand-in node → ACS → the attempt's screen.

Real signatures and encryption both ways: the stand-in runs in process and the service's SP
reaches its SOAP endpoint through httpx's WSGI transport.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import html as lxml_html
from sqlalchemy import func, select
from structlog.testing import capture_logs

from tests.factories import count
from tests.web.nodelogin import ANNA, at_node, fields, log_in, text_of
from ueoz_migration.adapters.wk import messages as m
from ueoz_migration.adapters.wk.ecdh import decrypt_assertion
from ueoz_migration.adapters.wk.settings import ARTIFACT_RESOLUTION_PATH, LOGOUT_PATH
from ueoz_migration.adapters.wk.xmlsig import Verifier, parse, select_one
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import Attempt, PendingLogin, WebSession
from ueoz_migration.domain.identity import FAMILY_NAME_MAX, GIVEN_NAMES_MAX
from ueoz_migration.standin import Failure
from ueoz_migration.web import create_app


def test_login_starts_the_attempt_and_shows_the_search(web, node, services):
    response, _ = log_in(web, node)

    assert response.status_code == 303 and response.headers["Location"] == "/migracja"
    text = text_of(web.get("/migracja"))
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in text
    with services.sessions() as session:
        attempt = session.scalars(select(Attempt)).one()
        pending = session.scalars(select(PendingLogin)).one()
    assert attempt.domain_system is None  # the start page's own login: no domain system
    assert attempt.given_names == "Anna Maria" and attempt.pesel == "87042712342"
    assert pending.consumed_at is not None


def test_a_pesel_in_the_eidas_form_logs_the_person_in(
    web, node, standin, back_channel, wk, services, monkeypatch
):
    node_state = standin.extensions["wk_standin"]
    eidas = dataclasses.replace(node_state.settings, person_identifier="eidas")
    monkeypatch.setattr(node_state, "settings", eidas)

    response, _ = log_in(web, node)

    assert response.status_code == 303 and response.headers["Location"] == "/migracja"
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in text_of(web.get("/migracja"))
    # The node wrote PL/PL/<PESEL>; the attempt holds the PESEL, as from a bare one.
    assert vouched_attribute(back_channel, wk, "PersonIdentifier") == "PL/PL/87042712342"
    with services.sessions() as session:
        assert session.scalars(select(Attempt.pesel)).one() == "87042712342"


def test_another_countrys_eidas_identifier_is_bad_data_from_the_node(
    web, node, standin, services, monkeypatch
):
    post_back = node_post_back(web, node, {**ANNA, "pesel": "DE/PL/87042712342"})

    with capture_logs() as logs:
        response = web.post("/saml/acs", data=post_back)

    assert failure_page(response) == DATA
    assert count(services, Attempt) == 0
    [failed] = [line for line in logs if line["event"] == "login.failed"]
    assert failed["reason"] == "invalid_pesel" and "87042712342" not in str(failed)


def test_a_node_issuer_unlike_its_host_names_the_setting_to_set(
    web, node, standin, services, monkeypatch
):
    # The node's issuer is not the host of WK_NODE_URL, and WK_NODE_ENTITY_ID is not set.
    node_state = standin.extensions["wk_standin"]
    renamed = dataclasses.replace(node_state.settings, entity_id="https://login.example.gov.pl")
    monkeypatch.setattr(node_state, "settings", renamed)
    provider = web.application.extensions["ueoz.login"].provider
    assert not provider.settings.node_entity_id_set

    with capture_logs() as logs:
        response, _ = log_in(web, node)

    assert failure_page(response) == TECHNICAL
    [failed] = [line for line in logs if line["event"] == "login.failed"]
    assert failed["reason"] == "mismatch"
    assert "WK_NODE_ENTITY_ID is not set" in failed["detail"]
    assert "set WK_NODE_ENTITY_ID to the node's issuer" in failed["detail"]


def test_a_csrf_token_from_before_the_login_is_refused_after_it(web, node, services):
    # An attacker who planted a session in the victim's browser knows its CSRF token (any
    # form gives one: here the logout confirmation's).
    form = web.get("/oidc/logout").get_data(as_text=True)
    planted = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    web.get("/jezyk/en")
    log_in(web, node)

    refused = web.post("/migracja/cancel", data={"csrf_token": planted})

    assert refused.status_code == 400
    assert "<h1>The form has expired</h1>" in text_of(refused)
    with services.sessions() as session:
        assert session.scalars(select(Attempt.state)).one() == "searching"  # not cancelled


def test_login_gives_the_browser_a_new_session_id(web, node, services):
    web.get("/jezyk/en")  # a session exists before the login
    before = web.get_cookie("ueoz_session").value

    log_in(web, node)

    after = web.get_cookie("ueoz_session").value
    assert after != before
    with services.sessions() as session:
        ids = set(session.scalars(select(WebSession.id)))
    assert before not in ids and after in ids
    assert "Searching for your account" in text_of(web.get("/migracja"))  # language kept


def node_post_back(web, node, person=ANNA, *, action="login") -> dict[str, str]:
    """Log in at the node in ``web``'s name, and stop before the node posts back."""
    return at_node(web, node, web.get("/login"), person, action=action)


def test_a_post_back_that_came_without_our_cookie_goes_once_more_from_this_site(
    web, node, services
):
    post_back = node_post_back(web, node)
    cross_site = web.application.test_client()  # the node's POST: no SameSite=Lax cookie

    hop = cross_site.post("/saml/acs", data=post_back)

    assert hop.status_code == 200 and "Set-Cookie" not in hop.headers
    action, again = fields(hop.get_data(as_text=True), "back-from-node")
    assert action == "/saml/acs"
    assert again == {**post_back, "from_this_site": "1"}
    assert count(services, Attempt) == 0  # nothing resolved yet

    done = web.post(action, data=again)  # the same browser, from this site: with its cookie

    assert done.status_code == 303 and done.headers["Location"] == "/migracja"
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in text_of(web.get("/migracja"))


def test_another_browser_cannot_finish_someones_login(web, node, services):
    # Login CSRF: a page elsewhere posts the attacker's own artifact from the victim's browser.
    post_back = node_post_back(web, node)  # the attacker stops before the node posts back
    victim = web.application.test_client()
    victim.get("/jezyk/en")  # the victim has a session of their own

    hop = victim.post("/saml/acs", data=post_back)
    _, again = fields(hop.get_data(as_text=True), "back-from-node")
    refused = victim.post("/saml/acs", data=again)

    assert refused.status_code == 400
    assert "We do not recognise this login" in text_of(refused)
    assert victim.get("/migracja").status_code in (302, 303)  # not logged in as anyone
    assert count(services, Attempt) == 0
    with services.sessions() as session:
        assert session.scalars(select(PendingLogin.consumed_at)).one() is None


def test_the_same_post_back_twice_is_refused_the_second_time(web, node, services):
    _, post_back = log_in(web, node)

    again = web.post("/saml/acs", data=post_back)

    assert again.status_code == 400
    assert "Nie rozpoznajemy tego logowania" in text_of(again)
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Attempt)) == 1


def test_cancelling_at_the_node_shows_its_own_page_and_leaves_no_session(web, node, services):
    with capture_logs() as logs:
        response, _ = log_in(web, node, action="cancel")

    text = text_of(response)
    assert "<h1>Logowanie zostało przerwane</h1>" in text
    assert re.search(r'href="/"[^>]*>Zaloguj się ponownie</a>', text)
    # One line for the operator, with the node's status in it.
    (failed,) = [line for line in logs if line["event"] == "login.failed"]
    assert failed["reason"] == "authn_failed" and "AuthnFailed" in failed["detail"]
    assert web.get("/migracja").status_code == 302
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Attempt)) == 0


def test_an_already_migrated_person_logging_in_here_is_told_so_and_goes_nowhere(
    web, node, services
):
    log_in(web, node)
    with services.sessions() as session:
        attempt = session.scalars(select(Attempt)).one()
    _verify_account(services, attempt.id)

    web2 = create_app(services=services).test_client()
    response, _ = log_in(web2, node)
    start = web2.get(response.headers["Location"], follow_redirects=True)

    text = text_of(start)
    assert "<h1>Zaloguj się do Systemu</h1>" in text
    assert "Masz już konto UEOZ. Możesz logować się do systemów CeZ przez login.gov.pl." in text


def last_assertion(back_channel, wk):
    """The last assertion the node sent, decrypted as the SP would."""
    (_, answer) = back_channel.at(ARTIFACT_RESOLUTION_PATH)[-1]
    encrypted = select_one(m.soap_body(parse(answer)), "saml2p:Response/saml2:EncryptedAssertion")
    key = serialization.load_pem_private_key(wk.sp_encryption.key_pem, password=None)
    return parse(decrypt_assertion(encrypted, key))


def vouched_attribute(back_channel, wk, name: str) -> str:
    """The value of the eIDAS attribute ``name`` in the last assertion the node sent."""
    [value] = last_assertion(back_channel, wk).iterfind(
        f".//{{*}}Attribute[@Name='{m.NATURAL_PERSON}{name}']/{{*}}AttributeValue"
    )
    return value.text


def what_the_node_vouched(back_channel, wk) -> tuple[str, str]:
    """The NameID and SessionIndex of the last assertion the node sent, read as the SP would."""
    assertion = last_assertion(back_channel, wk)
    name_id = m.text_of(select_one(assertion, "saml2:Subject/saml2:NameID"))
    session_index = select_one(assertion, "saml2:AuthnStatement").get("SessionIndex")
    assert name_id and session_index
    return name_id, session_index


def test_logout_ends_the_session_here_and_at_the_node(web, node, back_channel, wk):
    log_in(web, node)
    name_id, session_index = what_the_node_vouched(back_channel, wk)
    page = web.get("/migracja").get_data(as_text=True)
    assert ">Wyloguj</button>" in page
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert back_channel.at(LOGOUT_PATH) == []

    response = web.post("/logout", data={"csrf_token": token}, follow_redirects=True)

    assert "Wylogowano." in text_of(response)
    assert web.get("/migracja").status_code == 302
    # The node was told, over its SOAP logout service, in a request signed by the service.
    told = back_channel.at(LOGOUT_PATH)
    assert len(told) == 1, f"the node's logout service was called {len(told)} times, not once"
    [(sent, answer)] = told
    logout = m.soap_body(parse(sent))
    assert logout.tag == m.q("saml2p", "LogoutRequest")
    Verifier(wk.sp_signing.cert_pem).verify(logout)
    assert logout.get("Destination") == wk.logout_url
    assert m.text_of(select_one(logout, "saml2:Issuer")) == wk.sp_entity_id
    assert m.text_of(select_one(logout, "saml2:NameID")) == name_id
    assert m.text_of(select_one(logout, "saml2p:SessionIndex")) == session_index
    # ... and it took the request: a LogoutResponse to it, with Success.
    logged_out = m.soap_body(parse(answer))
    assert logged_out.tag == m.q("saml2p", "LogoutResponse")
    assert logged_out.get("InResponseTo") == logout.get("ID")
    assert m.status_codes(logged_out)[0] == m.STATUS_SUCCESS


def _verify_account(services, attempt_id):
    """Walk the attempt to done the way the worker and the person would."""
    import re

    from tests.factories import add_eploz_account, submit, user
    from ueoz_migration.db.models import OutboxMessage

    journey = services.journey
    eploz_id = add_eploz_account(services)
    journey.fire(attempt_id, "account_found", actor=user(), eploz_account_id=eploz_id)
    journey.fire(attempt_id, "create_account", actor=user())
    submit(services, attempt_id)
    with services.sessions() as session:
        body = session.scalars(select(OutboxMessage.body)).one()
    token = re.search(r"/weryfikacja/(\S+)", body).group(1)
    journey.fire(attempt_id, "verify", actor=user(), token=token)


def attempts_held(services, app) -> list[str]:
    """The attempts the stored web sessions hold, whichever browser they belong to."""
    with services.sessions() as db:
        stored = db.scalars(select(WebSession.data)).all()
    decode = app.session_interface.serializer.decode
    return [data["attempt_id"] for data in map(decode, stored) if "attempt_id" in data]


def started_earlier(services, by: timedelta) -> None:
    """Make the pending login look as if the browser had left for the node ``by`` earlier."""
    with transaction(services.sessions) as db:
        pending = db.scalars(select(PendingLogin)).one()
        pending.created_at -= by
        pending.expires_at -= by


# operations.md: "a login must come back from the node within 15 minutes".
def test_a_login_back_from_the_node_within_15_minutes_is_taken(web, node, services):
    post_back = node_post_back(web, node)
    started_earlier(services, timedelta(minutes=14))

    response = web.post("/saml/acs", data=post_back)

    assert response.status_code == 303 and response.headers["Location"] == "/migracja"
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in text_of(web.get("/migracja"))


def test_a_login_back_from_the_node_after_15_minutes_ends_on_a_clear_page(
    web, node, back_channel, services
):
    post_back = node_post_back(web, node)
    started_earlier(services, timedelta(minutes=15, seconds=1))

    response = web.post("/saml/acs", data=post_back)

    assert response.status_code == 400
    assert failure_page(response) == EXPIRED
    assert back_channel.at(ARTIFACT_RESOLUTION_PATH) == []  # the artifact was not even resolved
    assert count(services, Attempt) == 0
    assert attempts_held(services, web.application) == []
    start = web.get("/migracja", follow_redirects=True)
    assert "<h1>Zaloguj się do Systemu</h1>" in text_of(start)


# What the person reads on each failure page (templates/login/failed.html).
CANCELLED = (
    "Logowanie zostało przerwane",
    "Logowanie w Węźle Krajowym zostało anulowane albo nie zakończyło się uwierzytelnieniem. "
    "Możesz spróbować jeszcze raz.",
)
DENIED = (
    "Węzeł Krajowy odmówił logowania",
    "Węzeł Krajowy odmówił potwierdzenia Twojej tożsamości temu serwisowi. Zaloguj się "
    "ponownie, a jeśli odmowa się powtórzy, skontaktuj się z infolinią CeZ.",
)
UNKNOWN_PRINCIPAL = (
    "Węzeł Krajowy nie rozpoznał Twojego konta",
    "Węzeł Krajowy nie potwierdził Twojej tożsamości. Sprawdź, czy masz aktywny profil zaufany "
    "lub inny środek identyfikacji, i spróbuj ponownie.",
)
REQUESTER = (
    "Nasz serwis wysłał błędne żądanie logowania",
    "Węzeł Krajowy uznał żądanie logowania wysłane przez nasz serwis za nieprawidłowe. To błąd "
    "po naszej stronie, nie Twój: spróbuj ponownie później, a jeśli błąd się powtórzy, "
    "skontaktuj się z infolinią CeZ.",
)
LOA = (
    "Zbyt niski poziom uwierzytelnienia",
    "Wybrany sposób logowania nie daje wymaganego poziomu bezpieczeństwa. Zaloguj się profilem "
    "zaufanym, e-dowodem lub bankowością elektroniczną.",
)
UNAVAILABLE = (
    "Węzeł Krajowy jest chwilowo niedostępny",
    "Nie udało się połączyć z Węzłem Krajowym. Spróbuj ponownie za kilka minut.",
)
EXPIRED = (
    "Logowanie trwało zbyt długo",
    "Odpowiedź Węzła Krajowego przyszła po czasie. Zaloguj się ponownie.",
)
REPLAY = (
    "To logowanie zostało już wykorzystane",
    "Ta odpowiedź Węzła Krajowego została już użyta – być może strona została odświeżona. "
    "Zaloguj się ponownie.",
)
STALE = (
    "Nie rozpoznajemy tego logowania",
    "Logowanie wygasło albo zostało już zakończone (na przykład w innej karcie). "
    "Zaloguj się ponownie.",
)
DATA = (
    "Niepełne lub błędne dane z Węzła Krajowego",
    "Węzeł Krajowy nie przekazał wszystkich danych potrzebnych do migracji konta (imię, "
    "nazwisko, data urodzenia, poprawny PESEL) albo przekazał dane, których nie możemy "
    "przyjąć (na przykład zbyt długie imię lub nazwisko). Jeśli błąd się powtórzy, "
    "skontaktuj się z infolinią CeZ.",
)
TECHNICAL = (
    "Logowanie nie powiodło się",
    "Nie udało się potwierdzić odpowiedzi Węzła Krajowego. Zaloguj się ponownie, a jeśli błąd "
    "się powtórzy, skontaktuj się z infolinią CeZ.",
)


def failure_page(response) -> tuple[str, str]:
    """The heading and the explanation the person reads on a failed login's page."""
    page = response.get_data(as_text=True)
    assert "Traceback" not in page and "Wystąpił błąd po naszej stronie" not in page
    document = lxml_html.fromstring(page)
    [heading] = document.xpath("//main//h1")
    explanation = document.xpath("//main//div[contains(@class, 'panel-error')]/p")[0]
    assert document.findtext(".//title").startswith(heading.text_content())
    return heading.text_content().strip(), " ".join(explanation.text_content().split())


@dataclasses.dataclass(frozen=True)
class Failing:
    """One way the login fails, and the page the person then reads."""

    page: tuple[str, str]
    node_failure: Failure | None = None  # what STANDIN_FAILURE would make the node do
    action: str = "login"  # the node's button the person presses
    person: dict[str, str] = dataclasses.field(default_factory=dict)  # typed at the node
    node: dict[str, object] = dataclasses.field(default_factory=dict)  # the stand-in's settings
    service: dict[str, object] = dataclasses.field(default_factory=dict)  # WK_* at the ACS
    logged_in_elsewhere_first: bool = False


FAILURES = {
    "cancelled": Failing(CANCELLED, action="cancel"),
    "authn_failed": Failing(CANCELLED, Failure.AUTHN_FAILED),
    "request_denied": Failing(DENIED, Failure.REQUEST_DENIED),
    "unknown_principal": Failing(UNKNOWN_PRINCIPAL, Failure.UNKNOWN_PRINCIPAL),
    # A denial inside a Response that answers none of our requests is still a denial.
    "denied_in_response": Failing(DENIED, Failure.DENIED_IN_RESPONSE),
    "loa_too_low": Failing(LOA, service={"loa": "high"}),
    "slow": Failing(
        UNAVAILABLE,
        Failure.SLOW,
        node={"slow_seconds": 1.0},
        service={"timeout_seconds": 0.3},
    ),
    "dead": Failing(UNAVAILABLE, Failure.DEAD),
    "soap_fault": Failing(UNAVAILABLE, Failure.SOAP_FAULT),
    "expired": Failing(EXPIRED, Failure.EXPIRED),
    "repeat_assertion_id": Failing(
        REPLAY, Failure.REPEAT_ASSERTION_ID, logged_in_elsewhere_first=True
    ),
    "invalid_pesel": Failing(DATA, person={"pesel": "87042787635"}),  # checksum fails
    # Longer than the tables keep (PostgreSQL refused it with a 500), or holding a character
    # no name may (here a right-to-left override): refused before anything is stored.
    "long_given_names": Failing(DATA, person={"first_name": "Anna " * 40 + "M"}),
    "long_family_name": Failing(DATA, person={"last_name": "M" * (FAMILY_NAME_MAX + 1)}),
    "invisible_character": Failing(DATA, person={"last_name": "Mickiewicz\u202eSokołowska"}),
    "requester": Failing(REQUESTER, Failure.REQUESTER),
    "bad_signature": Failing(TECHNICAL, Failure.BAD_SIGNATURE),
    "other_audience": Failing(TECHNICAL, Failure.OTHER_AUDIENCE),
    "no_audience": Failing(TECHNICAL, Failure.NO_AUDIENCE),
}
# The stand-in's modes that are no failure: the service must take these answers.
NOT_FAILURES = {Failure.KEY_128, Failure.COMMENT_IN_NAMEID}


def test_every_failure_the_stand_in_can_produce_has_its_page_checked():
    checked = {failing.node_failure for failing in FAILURES.values()} - {None}
    assert checked | NOT_FAILURES == set(Failure)


@pytest.mark.parametrize("failing", FAILURES.values(), ids=FAILURES.keys())
def test_each_failed_login_shows_the_person_what_happened_and_logs_no_one_in(
    web, node, standin, services, monkeypatch, failing
):
    node_state = standin.extensions["wk_standin"]
    monkeypatch.setattr(node_state, "failure", failing.node_failure)
    monkeypatch.setattr(
        node_state, "settings", dataclasses.replace(node_state.settings, **failing.node)
    )
    if failing.logged_in_elsewhere_first:
        first, _ = log_in(web.application.test_client(), node)
        assert first.status_code == 303
    attempts, held = count(services, Attempt), attempts_held(services, web.application)

    post_back = node_post_back(web, node, {**ANNA, **failing.person}, action=failing.action)
    provider = web.application.extensions["ueoz.login"].provider
    monkeypatch.setattr(
        provider, "settings", dataclasses.replace(provider.settings, **failing.service)
    )
    response = web.post("/saml/acs", data=post_back)

    # No one is logged in: no attempt started, none held by any session, this one's included.
    assert count(services, Attempt) == attempts
    assert attempts_held(services, web.application) == held
    # The person reads, in Polish, what happened and what to do; no stack trace.
    assert response.status_code == 403
    assert failure_page(response) == failing.page
    again = lxml_html.fromstring(response.get_data(as_text=True)).xpath(
        "//main//a[normalize-space()='Zaloguj się ponownie']/@href"
    )
    assert again == ["/"]
    assert web.get("/migracja").headers["Location"] == "/"


def test_names_as_long_as_the_tables_keep_are_taken_on_both_databases(web, node, services):
    person = {**ANNA, "first_name": "A" * GIVEN_NAMES_MAX, "last_name": "Ł" * FAMILY_NAME_MAX}

    response, _ = log_in(web, node, person)

    assert response.status_code == 303
    with services.sessions() as session:
        attempt = session.scalars(select(Attempt)).one()
    assert (attempt.given_names, attempt.family_name) == (person["first_name"], person["last_name"])


def test_a_name_too_long_is_logged_by_what_is_wrong_never_by_its_value(web, node):
    person = {**ANNA, "first_name": "Zbigniew" * 30}

    with capture_logs() as lines:
        response, _ = log_in(web, node, person)

    assert response.status_code == 403
    [failed] = [line for line in lines if line["event"] == "login.failed"]
    assert (failed["reason"], failed["detail"]) == (
        "invalid_attribute",
        f"CurrentGivenName longer than {GIVEN_NAMES_MAX} characters",
    )
    assert "Zbigniew" not in repr(lines)


def test_logins_never_brought_back_are_cleared_when_the_next_one_starts(web, services):
    web.get("/login")
    with transaction(services.sessions) as session:
        (pending,) = session.scalars(select(PendingLogin)).all()
        pending.expires_at -= timedelta(hours=1)

    web.get("/login")

    assert count(services, PendingLogin) == 1  # the stale one is gone, the new one waits
