"""Logins through the stand-in node, end to end, with real signatures and encryption."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import itertools
import logging
import re

import httpx
import pytest
from lxml import etree
from stdnum.pl import pesel as pesel_number
from structlog.testing import capture_logs

from ueoz_migration.adapters.wk import (
    FailureReason,
    LoginFailed,
    MemoryReplayStore,
    ServiceProvider,
)
from ueoz_migration.adapters.wk import messages as m
from ueoz_migration.adapters.wk.settings import ARTIFACT_RESOLUTION_PATH, LOGOUT_PATH, SSO_PATH
from ueoz_migration.adapters.wk.xmlsig import NS, Verifier, parse, select_one
from ueoz_migration.standin import DEMO_IDENTITIES, Failure
from ueoz_migration.standin.node import Person

from .conftest import ANNA, Browser, Recording


def test_a_login_returns_the_person_the_node_vouches_for(sp, browser):
    arrival = browser.login(sp, ANNA)

    identity = sp.resolve(arrival.artifact, arrival.request_id)

    assert arrival.relay_state == "rs-1"
    assert identity.given_names == ANNA.first_name
    assert identity.family_name == ANNA.last_name
    assert identity.pesel == ANNA.pesel
    assert identity.date_of_birth == ANNA.date_of_birth
    assert identity.name_id and identity.session_index
    assert identity.loa == sp.settings.loa_uri


@pytest.mark.parametrize("person", DEMO_IDENTITIES, ids=lambda p: p.key)
def test_every_demo_person_can_log_in(sp, browser, person):
    arrival = browser.login(sp, person)

    identity = sp.resolve(arrival.artifact, arrival.request_id)

    assert (identity.given_names, identity.family_name, identity.pesel) == (
        person.first_name,
        person.last_name,
        person.pesel,
    )
    assert pesel_number.get_birth_date(identity.pesel) == identity.date_of_birth


def test_the_artifact_can_come_back_by_redirect(make_standin, make_sp):
    app = make_standin(artifact_binding="redirect")
    sp = make_sp(app)

    arrival = Browser(app).login(sp, ANNA)

    assert sp.resolve(arrival.artifact, arrival.request_id).pesel == ANNA.pesel


def test_the_authn_request_follows_the_profile(sp):
    form = sp.authn_request("relay")

    request = parse(base64.b64decode(form.saml_request))

    assert form.action == sp.settings.sso_url
    assert request.get("ID") == form.request_id
    assert request.get("ProtocolBinding") == m.BINDING_ARTIFACT
    assert request.get("ForceAuthn") == "true"
    assert request.get("AssertionConsumerServiceURL") == sp.settings.acs_url
    policy = request.find("saml2p:NameIDPolicy", NS)
    assert (policy.get("AllowCreate"), policy.get("Format")) == ("true", m.NAMEID_UNSPECIFIED)
    context = request.find("saml2p:RequestedAuthnContext", NS)
    assert context.get("Comparison") == "minimum"
    assert context.findtext("saml2:AuthnContextClassRef", namespaces=NS) == (
        "http://eidas.europa.eu/LoA/substantial"
    )
    assert request.findtext("saml2p:Extensions/eidas:SPType", namespaces=NS) == "public"
    requested = request.findall(
        "saml2p:Extensions/eidas:RequestedAttributes/eidas:RequestedAttribute", NS
    )
    assert {(a.get("Name"), a.get("isRequired"), a.get("NameFormat")) for a in requested} == {
        (m.NATURAL_PERSON + name, "true", m.ATTRNAME_URI) for name in m.ATTRIBUTES
    }
    Verifier(sp.settings.sp_signing.cert_pem).verify(request)


def test_the_node_refuses_an_authn_request_changed_after_signing(sp, browser):
    form = sp.authn_request("relay")
    tampered = base64.b64decode(form.saml_request).replace(
        b'ForceAuthn="true"', b'ForceAuthn="false"'
    )

    page = browser.client.post(
        SSO_PATH, data={"SAMLRequest": base64.b64encode(tampered).decode(), "RelayState": "x"}
    )

    assert page.status_code == 400
    assert "Traceback" not in page.text


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Failure.AUTHN_FAILED, FailureReason.AUTHN_FAILED),
        (Failure.REQUEST_DENIED, FailureReason.REQUEST_DENIED),
        (Failure.UNKNOWN_PRINCIPAL, FailureReason.UNKNOWN_PRINCIPAL),
        (Failure.REQUESTER, FailureReason.REQUESTER),
    ],
)
def test_each_node_status_ends_the_login_with_its_own_reason(sp, browser, failure, reason):
    arrival = browser.login(sp, ANNA, query=f"?failure={failure}")

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == reason


def test_a_failure_chosen_on_the_login_page_applies(sp, browser):
    arrival = browser.login(sp, ANNA, failure=Failure.UNKNOWN_PRINCIPAL.value)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.UNKNOWN_PRINCIPAL


def test_cancelling_at_the_node_is_authn_failed(sp, browser):
    arrival = browser.login(sp, ANNA, action="cancel")

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.AUTHN_FAILED


def test_an_assertion_swapped_after_signing_is_refused(sp, browser, node):
    node.failure = Failure.BAD_SIGNATURE
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.BAD_SIGNATURE


def _loopback_sp(make_sp, sp_settings, base_url, **changes):
    settings = dataclasses.replace(
        sp_settings,
        sso_url=base_url + SSO_PATH,
        artifact_resolution_url=base_url + ARTIFACT_RESOLUTION_PATH,
        logout_url=base_url + LOGOUT_PATH,
        **changes,
    )
    return make_sp(httpx.HTTPTransport(), settings=settings)


def test_a_slow_resolution_service_is_node_unreachable(loopback_standin, make_sp, sp_settings):
    app, base_url = loopback_standin(failure=Failure.SLOW, slow_seconds=1.5)
    sp = _loopback_sp(make_sp, sp_settings, base_url, timeout_seconds=0.3)
    arrival = Browser(app).login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.NODE_UNREACHABLE


def test_a_login_over_real_sockets_succeeds(loopback_standin, make_sp, sp_settings):
    app, base_url = loopback_standin()
    sp = _loopback_sp(make_sp, sp_settings, base_url)
    arrival = Browser(app).login(sp, ANNA)

    assert sp.resolve(arrival.artifact, arrival.request_id).pesel == ANNA.pesel


def test_a_dead_resolution_service_is_node_unreachable(sp, browser, node):
    node.failure = Failure.DEAD
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.NODE_UNREACHABLE


def test_a_closed_port_is_node_unreachable(loopback_standin, make_sp, sp_settings):
    app, base_url = loopback_standin()
    arrival = Browser(app).login(_loopback_sp(make_sp, sp_settings, base_url), ANNA)
    sp = _loopback_sp(make_sp, sp_settings, "http://127.0.0.1:9")  # discard port: closed

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.NODE_UNREACHABLE


def test_a_soap_fault_ends_the_login_cleanly(sp, browser, node):
    node.failure = Failure.SOAP_FAULT
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.NODE_ERROR


@pytest.mark.parametrize("again", ["{}", "{}\n", " {} "], ids=["same", "newline", "spaces"])
def test_an_artifact_resolves_only_once(sp, browser, again):
    arrival = browser.login(sp, ANNA)
    sp.resolve(arrival.artifact, arrival.request_id)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(again.format(arrival.artifact), arrival.request_id)

    assert caught.value.reason == FailureReason.REPLAY  # caught here, not left to the node


def test_the_node_denies_an_artifact_already_resolved_elsewhere(make_sp, standin_app, browser):
    first, second = make_sp(standin_app), make_sp(standin_app, replay_store=MemoryReplayStore())
    arrival = browser.login(first, ANNA)
    first.resolve(arrival.artifact, arrival.request_id)

    with pytest.raises(LoginFailed) as caught:
        second.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.REQUEST_DENIED


def test_the_node_denies_an_unknown_artifact(sp, node):
    artifact = m.Artifact.new(node.settings.entity_id).encode()

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(artifact, "ID-never-sent")

    assert caught.value.reason == FailureReason.REQUEST_DENIED


def test_an_artifact_of_another_node_is_not_sent_anywhere(sp):
    artifact = m.Artifact.new("login.example.org").encode()

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(artifact, "ID-x")

    assert caught.value.reason == FailureReason.MISMATCH


@pytest.mark.parametrize("garbage", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_a_garbled_artifact_is_malformed(sp, garbage):
    with pytest.raises(LoginFailed) as caught:
        sp.resolve(garbage, "ID-x")

    assert caught.value.reason == FailureReason.MALFORMED


def test_an_assertion_is_accepted_once(sp, browser, node):
    node.failure = Failure.REPEAT_ASSERTION_ID
    first = browser.login(sp, ANNA)
    sp.resolve(first.artifact, first.request_id)
    second = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(second.artifact, second.request_id)

    assert caught.value.reason == FailureReason.REPLAY


def test_an_old_message_is_expired(sp, browser, node):
    node.failure = Failure.EXPIRED
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.EXPIRED


def test_a_response_to_another_request_is_a_mismatch(sp, browser):
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, "ID-some-other-request")

    assert caught.value.reason == FailureReason.MISMATCH


@pytest.mark.parametrize("failure", [Failure.OTHER_AUDIENCE, Failure.NO_AUDIENCE])
def test_an_assertion_not_restricted_to_this_service_is_a_mismatch(sp, browser, node, failure):
    # Signed by the node, encrypted to us, for our request: but not addressed to us.
    node.failure = failure
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.MISMATCH


def test_a_pesel_failing_its_checksum_is_refused(sp, browser):
    manual_anna = dataclasses.replace(ANNA, pesel="87042787635")
    arrival = browser.login(sp, manual_anna)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.INVALID_PESEL


@pytest.mark.parametrize("form", ["pesel", "eidas"])
def test_the_pesel_is_taken_bare_or_in_the_eidas_form(make_standin, make_sp, form):
    app = make_standin(person_identifier=form)
    sp = make_sp(app)
    arrival = Browser(app).login(sp, ANNA)

    assert sp.resolve(arrival.artifact, arrival.request_id).pesel == ANNA.pesel


@pytest.mark.parametrize(
    "identifier",
    ["DE/PL/87042712342", "PL/DE/87042712342", "PL/PL/87042787635"],
    ids=["issued-abroad", "for-another-country", "bad-checksum"],
)
def test_an_eidas_identifier_that_is_no_polish_pesel_is_refused(sp, browser, identifier):
    arrival = browser.login(sp, dataclasses.replace(ANNA, pesel=identifier))

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.INVALID_PESEL
    assert "87042" not in caught.value.detail  # the detail is logged: no PESEL in it


def test_a_denial_in_a_response_to_no_request_is_a_denial(sp, browser, node):
    # The inner Response answers none of our requests (no InResponseTo): its status, read
    # first, says why.
    node.failure = Failure.DENIED_IN_RESPONSE
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.REQUEST_DENIED


def test_a_successful_response_to_another_request_is_still_a_mismatch(sp, browser):
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, "ID-not-this-login")

    assert caught.value.reason == FailureReason.MISMATCH
    assert caught.value.detail == "InResponseTo is not our request"


@pytest.mark.parametrize("configured", [False, True], ids=["unset", "set"])
def test_a_login_failing_on_the_nodes_issuer_names_wk_node_entity_id(
    make_standin, make_sp, sp_settings, configured
):
    app = make_standin(entity_id="https://login.example.gov.pl")
    settings = dataclasses.replace(sp_settings, node_entity_id_set=configured)
    sp = make_sp(app, settings=settings)
    arrival = Browser(app).login(sp, ANNA)

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)

    # The artifact's SourceID is the first thing that names another node.
    assert caught.value.reason == FailureReason.MISMATCH
    if configured:
        assert caught.value.detail.endswith("WK_NODE_ENTITY_ID is 'node.test'")
    else:
        assert "WK_NODE_ENTITY_ID is not set, so the host of WK_NODE_URL, 'node.test'" in (
            caught.value.detail
        )


def test_a_128_bit_content_key_is_accepted(sp, browser, node):
    node.failure = Failure.KEY_128
    arrival = browser.login(sp, ANNA)

    assert sp.resolve(arrival.artifact, arrival.request_id).pesel == ANNA.pesel


def test_a_signed_assertion_is_verified_and_accepted(make_standin, make_sp):
    app = make_standin(sign_assertion=True)
    sp = make_sp(app)
    arrival = Browser(app).login(sp, ANNA)

    assert sp.resolve(arrival.artifact, arrival.request_id).family_name == ANNA.last_name


def test_a_higher_level_of_assurance_than_the_node_gives_is_refused(
    make_sp, standin_app, sp_settings
):
    asks_high = make_sp(standin_app, settings=dataclasses.replace(sp_settings, loa="high"))
    asks_substantial = make_sp(standin_app)
    # The stand-in answers with the level it was asked for; a login started at
    # "substantial" must not satisfy a service that wants "high".
    arrival = Browser(standin_app).login(asks_substantial, ANNA)

    with pytest.raises(LoginFailed) as caught:
        asks_high.resolve(arrival.artifact, arrival.request_id)

    assert caught.value.reason == FailureReason.INSUFFICIENT_LOA


def test_logout_ends_the_node_session(make_sp, standin_app, browser):
    back_channel = Recording(standin_app)
    sp = make_sp(back_channel)
    arrival = browser.login(sp, ANNA)
    identity = sp.resolve(arrival.artifact, arrival.request_id)
    assert back_channel.at(LOGOUT_PATH) == []

    sp.logout_request(identity.name_id, identity.session_index)

    told = back_channel.at(LOGOUT_PATH)
    assert len(told) == 1, f"the node's logout service was called {len(told)} times, not once"
    [(sent, answer)] = told
    logout = m.soap_body(parse(sent))
    assert logout.tag == m.q("saml2p", "LogoutRequest")
    Verifier(sp.settings.sp_signing.cert_pem).verify(logout)
    assert logout.get("Destination") == sp.settings.logout_url
    assert m.text_of(select_one(logout, "saml2:Issuer")) == sp.settings.sp_entity_id
    assert m.text_of(select_one(logout, "saml2:NameID")) == identity.name_id
    assert m.text_of(select_one(logout, "saml2p:SessionIndex")) == identity.session_index
    # The node took it: a LogoutResponse to this request, with Success.
    logged_out = m.soap_body(parse(answer))
    assert logged_out.tag == m.q("saml2p", "LogoutResponse")
    assert logged_out.get("InResponseTo") == logout.get("ID")
    assert m.status_codes(logged_out)[0] == m.STATUS_SUCCESS


def test_a_refused_logout_is_reported(sp, browser, node):
    arrival = browser.login(sp, ANNA)
    identity = sp.resolve(arrival.artifact, arrival.request_id)
    node.failure = Failure.REQUESTER

    with pytest.raises(LoginFailed) as caught:
        sp.logout_request(identity.name_id, identity.session_index)

    assert caught.value.reason == FailureReason.LOGOUT_FAILED


def test_metadata_publishes_both_keys_and_the_acs_and_no_logout_it_does_not_serve(sp):
    metadata = parse(sp.metadata_xml().encode())

    Verifier(sp.settings.sp_signing.cert_pem).verify(metadata)
    descriptor = metadata.find("md:SPSSODescriptor", NS)
    uses = {k.get("use") for k in descriptor.findall("md:KeyDescriptor", NS)}
    assert uses == {"signing", "encryption"}
    acs = descriptor.find("md:AssertionConsumerService", NS)
    assert (acs.get("Binding"), acs.get("Location")) == (m.BINDING_ARTIFACT, sp.settings.acs_url)
    assert descriptor.find("md:SingleLogoutService", NS) is None


def test_metadata_publishes_a_configured_logout_endpoint(sp):
    configured = dataclasses.replace(sp.settings, slo_url="https://ueoz.example/saml/logout")
    provider = type(sp)(configured, MemoryReplayStore())

    metadata = parse(provider.metadata_xml().encode())

    slo = metadata.find("md:SPSSODescriptor/md:SingleLogoutService", NS)
    assert (slo.get("Binding"), slo.get("Location")) == (
        m.BINDING_SOAP,
        "https://ueoz.example/saml/logout",
    )
    provider.close()
    assert metadata.get("entityID") == sp.settings.sp_entity_id
    assert etree.QName(metadata).localname == "EntityDescriptor"


@pytest.mark.parametrize(("seconds_ago", "accepted"), [(60, True), (200, False)])
def test_the_assertions_conditions_get_the_configured_clock_skew(
    sp, browser, node, seconds_ago, accepted
):
    # WK_CLOCK_SKEW_SECONDS is 120 here; python3-saml on its own would allow 300.
    assert sp.settings.clock_skew_seconds == 120
    original = node._assertion

    def conditions_ended(*args):
        xml = original(*args).decode()
        ended = m.saml_time(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago))
        xml, changed = re.subn(
            r'(<saml2:Conditions NotBefore="[^"]*" NotOnOrAfter=")[^"]*"', rf'\g<1>{ended}"', xml
        )
        assert changed == 1
        return xml.encode()

    node._assertion = conditions_ended
    arrival = browser.login(sp, ANNA)

    if accepted:
        assert sp.resolve(arrival.artifact, arrival.request_id).pesel == ANNA.pesel
    else:
        with pytest.raises(LoginFailed) as caught:
            sp.resolve(arrival.artifact, arrival.request_id)
        assert caught.value.reason == FailureReason.EXPIRED


def test_a_failed_login_is_left_to_the_caller_to_log_once(sp, browser, caplog):
    arrival = browser.login(sp, ANNA, action="cancel")

    with (
        capture_logs() as logs,
        caplog.at_level(logging.DEBUG, logger="ueoz_migration.adapters.wk"),
        pytest.raises(LoginFailed) as caught,
    ):
        sp.resolve(arrival.artifact, arrival.request_id)

    # The ACS logs `login.failed` with these two; the adapter adds no line of its own.
    assert caught.value.reason == FailureReason.AUTHN_FAILED
    assert caught.value.detail.endswith("status:AuthnFailed")
    assert logs == []
    # (httpx's own request line may be there, when an earlier test set the root logger's level)
    assert [record for record in caplog.records if record.name.startswith("ueoz_migration")] == []


def test_a_response_off_the_schema_is_logged_without_the_persons_values(sp, node):
    # A node that put the family name where the date of birth goes: libxml2's message
    # quotes the value, the log line must not.
    form = sp.authn_request("rs-1")
    ticket, _ = node.accept_authn_request(form.saml_request, form.relay_state)
    mixed_up = Person(ANNA.first_name, ANNA.last_name, ANNA.pesel, ANNA.last_name)
    artifact, _ = node.finish_login(ticket, mixed_up)

    with capture_logs() as logs, pytest.raises(LoginFailed) as caught:
        sp.resolve(artifact, form.request_id)

    assert caught.value.reason == FailureReason.MALFORMED
    (entry,) = logs
    assert entry["event"] == "wk.response_schema_invalid"
    assert entry["log_level"] == "info"
    assert entry["error"] == "SCHEMAV_CVC_DATATYPE_VALID_1_2_1"
    assert entry["path"].endswith("AttributeValue")
    assert ANNA.last_name not in repr(entry)


def _timed_sp(sp_settings, standin_app, steps: list[str]) -> ServiceProvider:
    ticks = itertools.count()
    return ServiceProvider(
        sp_settings,
        MemoryReplayStore(),
        httpx.Client(transport=httpx.WSGITransport(app=standin_app)),
        step_timer=lambda step, seconds: steps.append(f"{step} {seconds:g}"),
        step_clock=lambda: float(next(ticks)),
    )


def test_each_step_of_a_login_is_timed_for_the_benchmark(sp_settings, standin_app, browser):
    steps: list[str] = []
    sp = _timed_sp(sp_settings, standin_app, steps)
    arrival = browser.login(sp, ANNA)

    sp.resolve(arrival.artifact, arrival.request_id)
    sp.close()

    # benchmarks/bench_login.py reports these by name; the clock ticks once per reading.
    assert steps == [
        "resolve_soap 1",
        "verify_signatures 1",
        "decrypt 1",
        "saml_validation 1",
        "identity 1",
    ]


def test_a_step_that_fails_is_timed_up_to_its_failure(sp_settings, standin_app, browser):
    steps: list[str] = []
    sp = _timed_sp(sp_settings, standin_app, steps)
    arrival = browser.login(sp, ANNA)

    with pytest.raises(LoginFailed):
        sp.resolve(arrival.artifact, "ID-some-other-request")
    sp.close()

    assert steps == ["resolve_soap 1", "verify_signatures 1"]
