"""The login round trip: service → stand-in node → ACS → the attempt's screen.

Real signatures and encryption both ways: the stand-in runs in process and the service's SP
reaches its SOAP endpoint through httpx's WSGI transport.
"""

from __future__ import annotations

import html

import httpx
import pytest
from lxml import html as lxml_html
from sqlalchemy import func, select

from tests.factories import count
from ueoz_migration.adapters.wk import ServiceProvider, WkSettings
from ueoz_migration.adapters.wk.keys import dev_pair
from ueoz_migration.adapters.wk_replay import DbReplayStore
from ueoz_migration.db.models import Attempt, PendingLogin, WebSession
from ueoz_migration.standin import StandinSettings, create_standin_app
from ueoz_migration.web import create_app

ANNA = {
    "first_name": "Anna Maria",
    "last_name": "Mickiewicz-Sokołowska",
    "pesel": "87042712342",
    "date_of_birth": "1987-04-27",
}


@pytest.fixture
def node(services):
    settings = services.settings
    wk = WkSettings.from_env(
        settings.raw,
        base_url=settings.base_url,
        instance_dir=settings.instance_dir,
        production=False,
    )
    signing = dev_pair(settings.instance_dir / "wk", "standin-signing", "WK stand-in node")
    standin = create_standin_app(
        StandinSettings.for_service(wk, base_url="http://127.0.0.1:5001", signing=signing)
    )
    http = httpx.Client(transport=httpx.WSGITransport(app=standin))
    services.service_provider = ServiceProvider(wk, DbReplayStore(services.sessions), http)
    yield standin.test_client()
    services.service_provider.close()


@pytest.fixture
def web(services, node):
    return create_app(services=services).test_client()


def fields(page: str, form_id: str | None = None) -> tuple[str, dict[str, str]]:
    document = lxml_html.fromstring(page)
    form = document.get_element_by_id(form_id) if form_id else document.forms[0]
    hidden = {
        field.name: field.value or ""
        for field in form.inputs
        if field.name and getattr(field, "type", "") == "hidden"
    }
    return form.action, hidden


def log_in(web, node, person=ANNA, *, action="login", query="?system=P1"):
    """Play the browser: our login page, the node's form, the node's post back to the ACS."""
    page = web.get("/login" + query).get_data(as_text=True)
    url, data = fields(page, "to-node")
    assert url == "http://127.0.0.1:5001/login/SingleSignOnService"
    node_page = node.post("/login/SingleSignOnService", data=data).get_data(as_text=True)
    _, login = fields(node_page, "login")
    login.update(person, action=action)
    back = node.post("/login/standin/submit", data=login).get_data(as_text=True)
    acs, post_back = fields(back)
    assert acs == "http://ueoz.test/saml/acs"
    return web.post("/saml/acs", data=post_back), post_back


def text_of(response):
    return html.unescape(response.get_data(as_text=True))


def test_login_starts_the_attempt_and_shows_the_search(web, node, services):
    response, _ = log_in(web, node)

    assert response.status_code == 303 and response.headers["Location"] == "/migracja"
    text = text_of(web.get("/migracja"))
    assert "<h1>Wyszukiwanie Twojego konta</h1>" in text
    with services.sessions() as session:
        attempt = session.scalars(select(Attempt)).one()
        pending = session.scalars(select(PendingLogin)).one()
    assert (attempt.domain_system, attempt.return_url) == (
        "P1",
        "http://ueoz.test/demo/system/P1",
    )
    assert attempt.given_names == "Anna Maria" and attempt.pesel == "87042712342"
    assert pending.consumed_at is not None


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


def node_post_back(web, node, person=ANNA) -> dict[str, str]:
    """Log in at the node in ``web``'s name, and stop before the node posts back."""
    page = web.get("/login?system=P1").get_data(as_text=True)
    _, data = fields(page, "to-node")
    _, login = fields(node.post("/login/SingleSignOnService", data=data).get_data(as_text=True))
    login.update(person, action="login")
    _, post_back = fields(node.post("/login/standin/submit", data=login).get_data(as_text=True))
    return post_back


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
    response, _ = log_in(web, node, action="cancel")

    text = text_of(response)
    assert "<h1>Logowanie zostało przerwane</h1>" in text
    assert web.get("/migracja").status_code == 302
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Attempt)) == 0


def test_an_already_migrated_person_goes_straight_to_the_domain_system(web, node, services):
    log_in(web, node)
    with services.sessions() as session:
        attempt = session.scalars(select(Attempt)).one()
    _verify_account(services, attempt.id)

    web2 = create_app(services=services).test_client()
    response, _ = log_in(web2, node, query="?system=GABINET")
    response = web2.get(response.headers["Location"])

    assert response.status_code == 302
    assert response.headers["Location"] == "http://ueoz.test/demo/system/GABINET"


def test_logout_ends_the_session_here_and_at_the_node(web, node):
    log_in(web, node)
    page = web.get("/migracja").get_data(as_text=True)
    assert ">Wyloguj</button>" in page
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]

    response = web.post("/logout", data={"csrf_token": token}, follow_redirects=True)

    assert "Wylogowano." in text_of(response)
    assert web.get("/migracja").status_code == 302


def _verify_account(services, attempt_id):
    """Walk the attempt to done the way the worker and the person would."""
    import re

    from tests.factories import add_eploz_account, user
    from ueoz_migration.db.models import OutboxMessage

    journey = services.journey
    eploz_id = add_eploz_account(services)
    journey.fire(attempt_id, "account_found", actor=user(), eploz_account_id=eploz_id)
    journey.fire(attempt_id, "create_account", actor=user())
    journey.fire(
        attempt_id,
        "submit",
        actor=user(),
        email="anna@example.pl",
        email_repeat="anna@example.pl",
        terms_accepted=True,
    )
    with services.sessions() as session:
        body = session.scalars(select(OutboxMessage.body)).one()
    token = re.search(r"/weryfikacja/(\S+)", body).group(1)
    journey.fire(attempt_id, "verify", actor=user(), token=token)
