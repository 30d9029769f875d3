"""UEOZ as the domain systems' OpenID Provider: sign-in, tokens, claims, SSO, refusals.

Through Flask's client, with the stand-in node in process (real signatures both ways), on
SQLite and PostgreSQL. The domain systems are played by ``tests/domain_systems.py``.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from authlib.oidc.discovery import OpenIDProviderMetadata
from click.testing import CliRunner
from joserfc.jwk import ECKey
from sqlalchemy import select, update
from structlog.testing import capture_logs

from tests.domain_systems import DomainSystem
from tests.factories import (
    ANNA,
    add_eploz_account,
    count,
    link_token,
    log_of,
    migrate,
    search_worker,
    user,
)
from tests.web.nodelogin import at_node, fields, log_in, text_of
from ueoz_migration.adapters.wk.settings import ARTIFACT_RESOLUTION_PATH, LOGOUT_PATH
from ueoz_migration.adapters.wk.xmlsig import parse, select_one
from ueoz_migration.cli import main
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import (
    Attempt,
    BackchannelLogout,
    OidcCode,
    OidcToken,
    SsoSession,
    UeozAccount,
)
from ueoz_migration.web import create_app

HERMEGILDA_NODE = {
    "first_name": "HERMEGILDA",
    "last_name": "DLIGEMREH",
    "pesel": "97040117247",
    "date_of_birth": "1997-04-01",
}


@pytest.fixture
def p1(services) -> DomainSystem:
    return DomainSystem.register(services, "P1", name="Platforma P1")


@pytest.fixture
def gabinet(services) -> DomainSystem:
    return DomainSystem.register(services, "GABINET", name="gabinet.gov.pl", private_key_jwt=True)


@pytest.fixture
def anna_migrated(services):
    """Anna has a verified UEOZ account (her earlier migration is done)."""
    attempt = services.journey.start(ANNA, actor=user())
    return migrate(services, attempt.id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_in(web, node, system: DomainSystem, **params) -> dict[str, str]:
    """The browser asks for ``system``'s sign-in, logs in at the node as Anna (migrated)
    and comes back to the system: the answer's parameters."""
    acs, _ = log_in(web, node, start=system.authorize_url(**params))
    assert acs.headers["Location"] == "/przejdz-do-systemu"
    return system.answer(web.get("/przejdz-do-systemu"))


def tokens_for(web, system: DomainSystem, answer: dict[str, str]) -> dict:
    response = system.token(web, answer["code"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def resolutions(back_channel) -> int:
    """How many artifacts the node resolved: one per node login."""
    return len(back_channel.at(ARTIFACT_RESOLUTION_PATH))


# -- discovery and keys -----------------------------------------------------------------------


def test_discovery_describes_the_provider_as_openid_connect_discovery_asks(web):
    response = web.get("/.well-known/openid-configuration")

    metadata = OpenIDProviderMetadata(response.get_json())
    metadata.validate()  # every field as OpenID Connect Discovery 1.0 (section 3) defines it
    assert metadata["issuer"] == "http://localhost"
    assert metadata["authorization_endpoint"] == "http://localhost/oidc/authorize"
    assert metadata["end_session_endpoint"] == "http://localhost/oidc/logout"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    # ES256 signs unless a client was registered for RS256, which every provider must offer.
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "private_key_jwt",
    }
    assert metadata["acr_values_supported"] == [
        "http://eidas.europa.eu/LoA/low",
        "http://eidas.europa.eu/LoA/substantial",
        "http://eidas.europa.eu/LoA/high",
    ]
    assert metadata["backchannel_logout_supported"] is True
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_the_jwks_publishes_the_signing_keys_only_as_public_keys(web):
    keys = web.get("/oidc/jwks").get_json()["keys"]

    assert sorted((key["kty"], key["alg"], key["use"]) for key in keys) == [
        ("EC", "ES256", "sig"),
        ("RSA", "RS256", "sig"),
    ]
    assert all("d" not in key and "p" not in key for key in keys)


def test_a_client_registered_for_rs256_gets_rs256_id_tokens(web, node, services, anna_migrated):
    rsa = DomainSystem.register(services, "RSA", id_token_alg="RS256")

    tokens = tokens_for(web, rsa, signed_in(web, node, rsa))

    header = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "RS256"
    assert rsa.id_token(web, tokens["id_token"], algorithm="RS256")["sub"]


# -- signing in ---------------------------------------------------------------------------


def test_a_migrated_person_comes_back_signed_in_with_the_claims_the_system_may_have(
    web, node, services, p1, anna_migrated
):
    answer = signed_in(web, node, p1)

    assert answer["state"] == p1.last.state and answer["iss"] == "http://localhost"
    tokens = tokens_for(web, p1, answer)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300
    assert "refresh_token" not in tokens
    claims = p1.id_token(web, tokens["id_token"])
    assert claims["nonce"] == p1.last.nonce
    assert claims["acr"] == "http://eidas.europa.eu/LoA/substantial"
    assert abs(claims["auth_time"] - datetime.now(UTC).timestamp()) < 60
    assert (claims["given_name"], claims["family_name"]) == ("Anna Maria", "Mickiewicz-Sokołowska")
    assert (claims["email"], claims["email_verified"]) == ("anna@example.pl", True)
    assert claims["roles"] == ["LEKARZ"]  # her e-PLOZ grant for P1, not GABINET:ADMIN
    assert "pesel" not in claims  # P1 is not registered for the pesel scope
    userinfo = web.get("/oidc/userinfo", headers=bearer(tokens["access_token"]))
    assert userinfo.status_code == 200
    assert userinfo.get_json() == {
        "sub": claims["sub"],
        "name": "Anna Maria Mickiewicz-Sokołowska",
        "given_name": "Anna Maria",
        "family_name": "Mickiewicz-Sokołowska",
        "email": "anna@example.pl",
        "email_verified": True,
        "roles": ["LEKARZ"],
    }


def test_the_hand_off_is_a_row_of_the_attempts_log_naming_the_system_and_no_code(
    web, node, services, p1, anna_migrated
):
    answer = signed_in(web, node, p1)

    with services.sessions() as db:
        attempt = db.scalars(select(Attempt).where(Attempt.state == "handed_off")).one()
    rows = [
        (row.event, row.source, row.target, row.outcome) for row in log_of(services, attempt.id)
    ]
    assert rows == [
        ("start", "", "searching", "applied"),
        ("skip", "searching", "skipped", "applied"),
        ("hand_off", "skipped", "handed_off", "applied"),
    ]
    hand_off = log_of(services, attempt.id)[-1]
    assert json.loads(hand_off.detail) == {"client": "P1"}
    assert answer["code"] not in hand_off.detail
    # The auditor's replay follows the person out.
    replay = CliRunner().invoke(
        main, ["audit", "replay", attempt.id], env=dict(services.settings.raw)
    )
    assert replay.exit_code == 0, replay.output
    assert replay.stdout.splitlines()[-1] == (
        "path: searching → skipped → handed_off; handed off to P1 at "
        f"{hand_off.at:%Y-%m-%d %H:%M:%S} UTC"
    )


def test_a_person_not_yet_migrated_goes_through_the_journey_and_then_back_signed_in(
    web, node, services, p1
):
    add_eploz_account(services)  # Anna's e-PLOZ account, for the search to find
    acs, _ = log_in(web, node, start=p1.authorize_url())
    assert acs.headers["Location"] == "/migracja"
    search_worker(services).run_once()
    token = web.get("/migracja").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', token).group(1)
    web.post("/migracja/create_account", data={"csrf_token": csrf})
    web.post(
        "/migracja/submit",
        data={
            "csrf_token": csrf,
            "email": "anna@example.pl",
            "email_repeat": "anna@example.pl",
            "terms_accepted": "y",
        },
    )
    with services.sessions() as db:
        attempt_id = db.scalars(select(Attempt.id)).one()

    done = web.get(f"/weryfikacja/{link_token(services, attempt_id)}")

    page = text_of(done)
    assert "Twoje konto UEOZ zostało utworzone, a adres e-mail zweryfikowany." in page
    button = '<a class="button button-primary" href="/przejdz-do-systemu">'
    assert button + "Przejdź do systemu dziedzinowego</a>" in page
    answer = p1.answer(web.get("/przejdz-do-systemu"))
    claims = p1.id_token(web, tokens_for(web, p1, answer)["id_token"])
    assert claims["email"] == "anna@example.pl" and claims["roles"] == ["LEKARZ"]
    events = [row.event for row in log_of(services, attempt_id)]
    assert events[-2:] == ["verify", "hand_off"]


def test_after_208_dalej_and_a_new_account_the_person_goes_back_signed_in(web, node, services, p1):
    log_in(web, node, HERMEGILDA_NODE, start=p1.authorize_url())
    with services.sessions() as db:
        attempt_id = db.scalars(select(Attempt.id)).one()
    services.journey.fire(attempt_id, "search_failed", actor=user(), code=208)
    page = web.get("/migracja").get_data(as_text=True)
    assert "Wystąpił błąd w trakcie weryfikacji konta" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    web.post("/migracja/continue_new", data={"csrf_token": csrf})
    web.post(
        "/migracja/submit",
        data={
            "csrf_token": csrf,
            "email": "h@example.pl",
            "email_repeat": "h@example.pl",
            "terms_accepted": "y",
        },
    )
    web.get(f"/weryfikacja/{link_token(services, attempt_id)}")

    answer = p1.answer(web.get("/przejdz-do-systemu"))

    claims = p1.id_token(web, tokens_for(web, p1, answer)["id_token"])
    assert (claims["given_name"], claims["email"], claims["roles"]) == (
        "HERMEGILDA",
        "h@example.pl",
        [],  # a new account carries no e-PLOZ grants over
    )


def test_anuluj_leads_to_the_start_page_from_where_the_system_hears_access_denied(
    web, node, services, p1
):
    log_in(web, node, start=p1.authorize_url())
    with services.sessions() as db:
        attempt_id = db.scalars(select(Attempt.id)).one()
    services.journey.fire(attempt_id, "search_failed", actor=user(), code=201)
    page = web.get("/migracja").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    start = web.post("/migracja/cancel", data={"csrf_token": csrf}, follow_redirects=True)

    text = text_of(start)
    assert "<h1>Zaloguj się do Systemu</h1>" in text
    assert "Przerwano tworzenie konta w UEOZ." in text
    assert '<a href="/przejdz-do-systemu">Wróć do systemu Platforma P1 bez logowania</a>' in text
    answer = p1.answer(web.get("/przejdz-do-systemu"))
    assert (answer["error"], answer["state"], answer["iss"]) == (
        "access_denied",
        p1.last.state,
        "http://localhost",
    )
    assert services.journey.get(attempt_id).state == "cancelled"  # no hand-off: no one signed in
    assert count(services, UeozAccount) == 0


def test_after_anuluj_a_new_login_is_again_for_the_same_domain_system(web, node, services, p1):
    log_in(web, node, start=p1.authorize_url())
    with services.sessions() as db:
        attempt_id = db.scalars(select(Attempt.id)).one()
    services.journey.fire(attempt_id, "cancel", actor=user())
    web.get("/migracja")  # the cancelled screen sends the person to the start page

    acs, _ = log_in(web, node, start="/login")  # Zaloguj się przez login.gov.pl, once more

    assert acs.headers["Location"] == "/migracja"
    with services.sessions() as db:
        newest = db.scalars(select(Attempt).where(Attempt.state == "searching")).one()
    assert newest.domain_system == "P1"


def test_cancelling_at_the_node_lets_the_person_go_back_to_the_system(web, node, services, p1):
    failed, _ = log_in(web, node, start=p1.authorize_url(), action="cancel")

    text = text_of(failed)
    assert "<h1>Logowanie zostało przerwane</h1>" in text
    assert '<a href="/przejdz-do-systemu">Wróć do systemu Platforma P1 bez logowania</a>' in text
    answer = p1.answer(web.get("/przejdz-do-systemu"))
    assert answer["error"] == "access_denied" and answer["state"] == p1.last.state
    assert count(services, Attempt) == 0


# -- single sign-on ---------------------------------------------------------------------------


def test_a_second_system_signs_in_without_the_node_with_its_own_subject(
    web, node, back_channel, services, p1, gabinet, anna_migrated
):
    first = p1.id_token(web, tokens_for(web, p1, signed_in(web, node, p1))["id_token"])
    logins = resolutions(back_channel)

    answer = gabinet.answer(web.get(gabinet.authorize_url()))  # at once: no node, no screen

    assert resolutions(back_channel) == logins
    tokens = tokens_for(web, gabinet, answer)  # private_key_jwt
    second = gabinet.id_token(web, tokens["id_token"])
    assert second["sid"] == first["sid"]  # one UEOZ session
    assert second["sub"] != first["sub"]  # pairwise: the two cannot link her
    assert second["auth_time"] == first["auth_time"]  # the node login of the session
    assert second["roles"] == ["ADMIN"]


def test_public_subject_clients_share_the_subject(web, node, services, anna_migrated):
    one = DomainSystem.register(services, "ONE", public_subject=True)
    two = DomainSystem.register(services, "TWO", public_subject=True)

    first = one.id_token(web, tokens_for(web, one, signed_in(web, node, one))["id_token"])
    second = two.id_token(
        web, tokens_for(web, two, two.answer(web.get(two.authorize_url())))["id_token"]
    )

    assert first["sub"] == second["sub"]


def test_prompt_none_answers_login_required_without_a_session_and_a_code_with_one(
    web, node, services, p1, anna_migrated
):
    answer = p1.answer(web.get(p1.authorize_url(prompt="none")))
    assert (answer["error"], answer["state"]) == ("login_required", p1.last.state)
    assert count(services, Attempt) == 1  # Anna's earlier migration only

    signed_in(web, node, p1)
    again = p1.answer(web.get(p1.authorize_url(prompt="none")))
    assert "code" in again and again["state"] == p1.last.state


def test_prompt_none_for_a_person_still_migrating_asks_for_interaction(web, node, services, p1):
    log_in(web, node, start=p1.authorize_url())  # Anna, not migrated: her screens wait

    answer = p1.answer(web.get(p1.authorize_url(prompt="none")))

    assert answer["error"] == "interaction_required"


@pytest.mark.parametrize("params", [{"prompt": "login"}, {"max_age": "0"}])
def test_prompt_login_and_max_age_send_the_person_to_the_node_again(
    web, node, back_channel, services, p1, anna_migrated, params
):
    first = p1.id_token(web, tokens_for(web, p1, signed_in(web, node, p1))["id_token"])
    logins = resolutions(back_channel)

    page = web.get(p1.authorize_url(**params))

    assert 'id="to-node"' in page.get_data(as_text=True)  # to the node, not back with a code
    post_back = at_node(web, node, page)
    acs = web.post("/saml/acs", data=post_back)
    answer = p1.answer(web.get(acs.headers["Location"]))
    again = p1.id_token(web, tokens_for(web, p1, answer)["id_token"])
    assert resolutions(back_channel) == logins + 1
    assert again["sid"] == first["sid"]  # the same person: the same UEOZ session, logged in anew


def test_acr_values_ask_the_node_for_that_level_and_the_token_says_it(
    web, node, services, p1, anna_migrated
):
    high = "http://eidas.europa.eu/LoA/high"
    page = web.get(p1.authorize_url(acr_values=high))

    _, form = fields(page.get_data(as_text=True), "to-node")
    request = parse(base64.b64decode(form["SAMLRequest"]))
    asked = select_one(request, "saml2p:RequestedAuthnContext/saml2:AuthnContextClassRef")
    assert asked.text == high
    acs = web.post("/saml/acs", data=at_node(web, node, page))
    answer = p1.answer(web.get(acs.headers["Location"]))
    claims = p1.id_token(web, tokens_for(web, p1, answer)["id_token"])
    assert claims["acr"] == high


# -- refusals that never leave UEOZ -------------------------------------------------------------


def test_an_unknown_client_gets_a_page_here_and_never_a_redirect(web, services, p1):
    response = web.get(p1.authorize_url(client_id="NOPE"))

    assert response.status_code == 400 and "Location" not in response.headers
    assert "System, z którego przychodzisz, nie jest zarejestrowany w UEOZ." in text_of(response)
    assert count(services, Attempt) == 0


def test_an_unregistered_redirect_uri_gets_a_page_here_and_never_a_redirect(web, services, p1):
    response = web.get(p1.authorize_url(redirect_uri="https://evil.example/callback"))

    assert response.status_code == 400 and "Location" not in response.headers
    assert "Adres powrotu podany przez system dziedzinowy nie jest zarejestrowany" in text_of(
        response
    )


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"scope": "profile email"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"max_age": "soon"}, "invalid_request"),
    ],
    ids=["no-pkce", "plain-pkce", "no-openid", "implicit", "request-object", "bad-max-age"],
)
def test_a_request_it_cannot_serve_is_answered_at_the_system_with_the_specs_error(
    web, services, p1, params, error
):
    with capture_logs() as logs:
        answer = p1.answer(web.get(p1.authorize_url(**params)))

    assert answer["error"] == error and answer["state"] == p1.last.state
    assert count(services, Attempt) == 0
    (refused,) = [line for line in logs if line["event"] == "oidc.authorization_refused"]
    assert (refused["client"], refused["error"]) == ("P1", error)


# -- the token endpoint ----------------------------------------------------------------------


def test_a_code_is_single_use_and_its_second_use_revokes_what_it_gave(
    web, node, services, p1, anna_migrated
):
    answer = signed_in(web, node, p1)
    tokens = tokens_for(web, p1, answer)
    assert web.get("/oidc/userinfo", headers=bearer(tokens["access_token"])).status_code == 200

    again = p1.token(web, answer["code"])

    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    refused = web.get("/oidc/userinfo", headers=bearer(tokens["access_token"]))
    assert refused.status_code == 401 and refused.get_json()["error"] == "invalid_token"


def test_an_expired_code_is_refused(web, node, services, p1, anna_migrated):
    answer = signed_in(web, node, p1)
    with transaction(services.sessions) as db:
        db.execute(update(OidcCode).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))

    response = p1.token(web, answer["code"])

    assert response.get_json()["error"] == "invalid_grant"
    assert count(services, OidcToken) == 0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"verifier": "x" * 43}, "invalid_grant"),
        ({"code_verifier": None}, "invalid_request"),
        ({"redirect_uri": "https://p1.example/elsewhere"}, "invalid_grant"),
    ],
    ids=["wrong-verifier", "no-verifier", "other-redirect-uri"],
)
def test_a_code_is_bound_to_its_pkce_and_redirect_uri(
    web, node, services, p1, anna_migrated, change, error
):
    answer = signed_in(web, node, p1)

    response = p1.token(web, answer["code"], **change)

    assert response.status_code == 400 and response.get_json()["error"] == error
    assert count(services, OidcToken) == 0


def test_a_code_is_bound_to_its_client(web, node, services, p1, gabinet, anna_migrated):
    answer = signed_in(web, node, p1)

    stolen = gabinet.token(web, answer["code"], verifier=p1.last.verifier)

    assert stolen.get_json()["error"] == "invalid_grant"
    assert p1.token(web, answer["code"]).status_code == 200  # still P1's to use


def test_a_wrong_secret_is_refused_and_logged_without_it(web, node, services, p1, anna_migrated):
    answer = signed_in(web, node, p1)
    right = p1.secret
    p1.secret = "not-the-secret"

    with capture_logs() as logs:
        response = p1.token(web, answer["code"])

    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    assert all("not-the-secret" not in repr(line) for line in logs)
    (refused,) = [line for line in logs if line["event"] == "oidc.token_refused"]
    assert (refused["client"], refused["error"]) == ("P1", "invalid_client")
    p1.secret = right
    assert p1.token(web, answer["code"]).status_code == 200


def test_a_client_assertion_signed_with_another_key_or_used_twice_is_refused(
    web, node, services, gabinet, anna_migrated
):
    log_in(web, node, start=gabinet.authorize_url())
    answer = gabinet.answer(web.get("/przejdz-do-systemu"))
    other = ECKey.generate_key("P-256", private=True)
    forged = gabinet.token(web, answer["code"], client_assertion=gabinet.assertion(key=other))
    assert forged.get_json()["error"] == "invalid_client"

    assertion = gabinet.assertion(jti="once")
    first = gabinet.token(web, answer["code"], client_assertion=assertion)
    assert first.status_code == 200
    replayed = gabinet.token(web, answer["code"], client_assertion=assertion)
    assert replayed.get_json()["error"] == "invalid_client"


def test_tokens_and_codes_never_reach_the_logs(web, node, services, p1, anna_migrated):
    with capture_logs() as logs:
        answer = signed_in(web, node, p1)
        tokens = tokens_for(web, p1, answer)
        web.get("/oidc/userinfo", headers=bearer(tokens["access_token"]))
        p1.token(web, answer["code"])  # a reuse, refused and logged

    written = repr(logs)
    for secret in (answer["code"], tokens["access_token"], tokens["id_token"], p1.secret):
        assert secret not in written
    assert ANNA.pesel not in written


def test_refused_token_and_userinfo_requests_create_nothing(web, services, p1):
    before = (count(services, Attempt), count(services, UeozAccount), count(services, SsoSession))

    web.post("/oidc/token", data={"grant_type": "authorization_code", "code": "nope"})
    web.get("/oidc/userinfo", headers=bearer("nope"))
    web.get("/oidc/userinfo")

    assert (
        count(services, Attempt),
        count(services, UeozAccount),
        count(services, SsoSession),
    ) == before


# -- logout ------------------------------------------------------------------------------------


def test_logout_from_one_system_ends_the_session_at_ueoz_and_the_node_and_tells_the_other(
    web, node, back_channel, services, p1, gabinet, anna_migrated
):
    from_p1 = tokens_for(web, p1, signed_in(web, node, p1))
    tokens_for(web, gabinet, gabinet.answer(web.get(gabinet.authorize_url())))

    response = web.get(
        "/oidc/logout?"
        + "&".join(
            [
                f"id_token_hint={from_p1['id_token']}",
                "post_logout_redirect_uri=https://p1.example/",
                "state=bye",
            ]
        )
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "https://p1.example/?state=bye"
    assert len(back_channel.at(LOGOUT_PATH)) == 1  # the node's session ended too
    with services.sessions() as db:
        queued = db.scalars(select(BackchannelLogout)).all()
        session_row = db.scalars(select(SsoSession)).one()
    assert [row.client_id for row in queued] == ["GABINET"]  # not P1, which asked
    assert session_row.ended_at is not None and queued[0].sid == session_row.sid
    revoked = web.get("/oidc/userinfo", headers=bearer(from_p1["access_token"]))
    assert revoked.status_code == 401
    # The browser is signed in nowhere: a new request goes to the node.
    assert 'id="to-node"' in web.get(p1.authorize_url()).get_data(as_text=True)


def test_a_logout_with_a_forged_id_token_hint_ends_nothing_and_redirects_nowhere(
    web, node, services, p1, anna_migrated
):
    signed_in(web, node, p1)
    forged = DomainSystem("P1", p1.redirect_uri, key=ECKey.generate_key("P-256")).assertion()

    with capture_logs() as logs:
        response = web.get(
            f"/oidc/logout?id_token_hint={forged}&post_logout_redirect_uri=https://p1.example/"
        )

    assert response.status_code == 400 and "Location" not in response.headers
    assert "<h1>Nie można wylogować</h1>" in text_of(response)
    with services.sessions() as db:
        assert db.scalars(select(SsoSession.ended_at)).one() is None
    (refused,) = [line for line in logs if line["event"] == "oidc.logout_refused"]
    assert refused["error"] == "invalid_request"


def test_a_logout_without_a_hint_asks_the_person_first(web, node, services, p1, anna_migrated):
    signed_in(web, node, p1)

    page = web.get("/oidc/logout?client_id=P1")

    text = text_of(page)
    assert "<h1>Wylogować się z UEOZ?</h1>" in text
    assert "System Platforma P1 prosi o wylogowanie Cię z UEOZ." in text
    with services.sessions() as db:
        assert db.scalars(select(SsoSession.ended_at)).one() is None
    _, form = fields(page.get_data(as_text=True), "logout-confirm")
    done = web.post("/oidc/logout", data=form, follow_redirects=True)
    assert "Wylogowano." in text_of(done)
    with services.sessions() as db:
        assert db.scalars(select(SsoSession.ended_at)).one() is not None


def test_the_services_own_logout_tells_every_system(
    web, node, services, p1, gabinet, anna_migrated
):
    tokens_for(web, p1, signed_in(web, node, p1))
    tokens_for(web, gabinet, gabinet.answer(web.get(gabinet.authorize_url())))
    page = web.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    web.post("/logout", data={"csrf_token": csrf})

    with services.sessions() as db:
        told = sorted(db.scalars(select(BackchannelLogout.client_id)))
    assert told == ["GABINET", "P1"]


# -- the way back from another browser ---------------------------------------------------------


def test_the_done_screen_in_another_browser_sends_the_person_to_the_systems_own_sign_in(
    web, node, services, p1
):
    log_in(web, node, start=p1.authorize_url())
    with services.sessions() as db:
        attempt_id = db.scalars(select(Attempt.id)).one()
    migrate_from_search(services, attempt_id)
    phone = create_app(services=services).test_client()  # the link opened on a phone

    link = f"/weryfikacja/{link_token(services, attempt_id)}"
    confirm = phone.get(link).get_data(as_text=True)  # another browser: one confirm button
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', confirm).group(1)
    page = phone.post(link, data={"csrf_token": csrf})
    assert "Przejdź do systemu dziedzinowego" in text_of(page)
    response = phone.get("/przejdz-do-systemu")

    assert response.status_code == 302
    assert response.headers["Location"] == "https://p1.example/login?iss=http%3A%2F%2Flocalhost"
    assert services.journey.get(attempt_id).state == "done"  # no hand-off from there


def test_a_double_click_hands_off_once_and_the_second_click_still_gets_there(
    web, node, services, p1, anna_migrated
):
    log_in(web, node, start=p1.authorize_url())

    first = web.get("/przejdz-do-systemu")
    second = web.get("/przejdz-do-systemu")

    assert "code" in p1.answer(first)
    assert second.headers["Location"] == "https://p1.example/login?iss=http%3A%2F%2Flocalhost"
    with services.sessions() as db:
        attempt_id = db.scalars(select(Attempt.id).where(Attempt.state == "handed_off")).one()
    assert [row.event for row in log_of(services, attempt_id)].count("hand_off") == 1


def migrate_from_search(services, attempt_id):
    """The worker finds Anna's account; the person creates it and gives an address."""
    from tests.factories import add_eploz_account, submit

    eploz_id = add_eploz_account(services)
    services.journey.fire(attempt_id, "account_found", actor=user(), eploz_account_id=eploz_id)
    services.journey.fire(attempt_id, "create_account", actor=user())
    submit(services, attempt_id)
