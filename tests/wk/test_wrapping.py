"""Signature wrapping, comments in signed text, and the real node's response."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from ueoz_migration.adapters.wk import FailureReason, LoginFailed, WkSettings
from ueoz_migration.adapters.wk import messages as m
from ueoz_migration.adapters.wk.ecdh import (
    AES256_GCM,
    KW_AES256,
    DecryptionError,
    _read_agreement,
    decrypt_assertion,
)
from ueoz_migration.adapters.wk.xmlsig import NS, parse
from ueoz_migration.standin import Failure

from .conftest import ANNA, DATA

FIXTURE = DATA / "wk-int-artifact-response-authnfailed.xml"


class Tampering(httpx.BaseTransport):
    """A back channel whose answers an attacker rewrites on the way."""

    def __init__(self, app, rewrite: Callable[[etree._Element], None]) -> None:
        self._inner = httpx.WSGITransport(app=app)
        self._rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        envelope = parse(response.read())
        self._rewrite(envelope)
        return httpx.Response(
            response.status_code,
            headers={"Content-Type": "text/xml"},
            content=etree.tostring(envelope),
        )


def _artifact_response(envelope: etree._Element) -> etree._Element:
    return envelope.find("soap:Body/saml2p:ArtifactResponse", NS)


def _forged_assertion() -> etree._Element:
    return etree.fromstring(
        f'<saml2:Assertion xmlns:saml2="{NS["saml2"]}" ID="ID-forged" Version="2.0" '
        'IssueInstant="2030-01-01T00:00:00Z"><saml2:Issuer>node.test</saml2:Issuer>'
        "<saml2:Subject><saml2:NameID>mallory</saml2:NameID></saml2:Subject>"
        "</saml2:Assertion>"
    )


def _login_through(make_sp, standin_app, browser, rewrite):
    sp = make_sp(Tampering(standin_app, rewrite))
    arrival = browser.login(sp, ANNA)
    return sp, arrival


def _refused(sp, arrival) -> FailureReason:
    with pytest.raises(LoginFailed) as caught:
        sp.resolve(arrival.artifact, arrival.request_id)
    return caught.value.reason


def test_an_unsigned_assertion_added_beside_the_signed_one_is_refused(
    make_sp, standin_app, browser
):
    def add_assertion(envelope):
        response = _artifact_response(envelope).find("saml2p:Response", NS)
        response.append(_forged_assertion())

    sp, arrival = _login_through(make_sp, standin_app, browser, add_assertion)

    assert _refused(sp, arrival) in {FailureReason.MALFORMED, FailureReason.BAD_SIGNATURE}


def test_an_assertion_slipped_into_the_soap_header_is_refused(make_sp, standin_app, browser):
    def add_to_header(envelope):
        envelope.find("soap:Header", NS).append(_forged_assertion())

    sp, arrival = _login_through(make_sp, standin_app, browser, add_to_header)

    assert _refused(sp, arrival) == FailureReason.MALFORMED


def test_a_signed_message_moved_inside_a_forged_one_is_refused(make_sp, standin_app, browser):
    def wrap(envelope):
        original = _artifact_response(envelope)
        forged = copy.deepcopy(original)
        forged.set("ID", "ID-forged")
        forged.remove(forged.find("ds:Signature", NS))
        forged_response = forged.find("saml2p:Response", NS)
        forged_response.remove(forged_response.find("ds:Signature", NS))
        # The genuine, signed message rides along inside the forged one.
        extensions = etree.Element(m.q("saml2p", "Extensions"))
        forged.insert(1, extensions)
        body = original.getparent()
        body.replace(original, forged)
        extensions.append(original)

    sp, arrival = _login_through(make_sp, standin_app, browser, wrap)

    assert _refused(sp, arrival) in {FailureReason.BAD_SIGNATURE, FailureReason.MALFORMED}


def test_a_signature_moved_onto_a_forged_message_with_the_same_id_is_refused(
    make_sp, standin_app, browser
):
    def move_signature(envelope):
        original = _artifact_response(envelope)
        forged = copy.deepcopy(original)
        forged.find("saml2p:Status/saml2p:StatusCode", NS).set(
            "Value", m.STATUS_PREFIX + "Requester"
        )
        # The original keeps its ID in the SOAP header: two elements with that ID.
        envelope.find("soap:Header", NS).append(original)
        envelope.find("soap:Body", NS).append(forged)

    sp, arrival = _login_through(make_sp, standin_app, browser, move_signature)

    assert _refused(sp, arrival) in {FailureReason.BAD_SIGNATURE, FailureReason.MALFORMED}


def test_a_reference_to_another_element_is_refused(make_sp, standin_app, browser):
    def point_elsewhere(envelope):
        outer = _artifact_response(envelope)
        inner_id = outer.find("saml2p:Response", NS).get("ID")
        outer.find("ds:Signature/ds:SignedInfo/ds:Reference", NS).set("URI", f"#{inner_id}")

    sp, arrival = _login_through(make_sp, standin_app, browser, point_elsewhere)

    assert _refused(sp, arrival) == FailureReason.BAD_SIGNATURE


def test_a_comment_inside_the_name_id_does_not_cut_it_short(sp, browser, node):
    plain = sp.resolve(*_arrive(browser, sp))
    node.failure = Failure.COMMENT_IN_NAMEID

    commented = sp.resolve(*_arrive(browser, sp))

    # The node signed "abcd<!--x-->efgh": the whole text is the NameID, not "abcd".
    assert commented.name_id == plain.name_id
    assert len(commented.name_id) == 64


def test_a_comment_added_to_signed_text_in_transit_changes_nothing(make_sp, standin_app, browser):
    def split_issuer(envelope):
        issuer = _artifact_response(envelope).find("saml2:Issuer", NS)
        head, tail = issuer.text[:4], issuer.text[4:]
        issuer.text = head
        comment = etree.Comment("inserted")
        comment.tail = tail
        issuer.append(comment)

    sp, arrival = _login_through(make_sp, standin_app, browser, split_issuer)

    # Exclusive c14n ignores comments, so the signature still holds; what matters is
    # that the issuer is read whole and the login goes on as the node meant it.
    assert sp.resolve(arrival.artifact, arrival.request_id).pesel == ANNA.pesel


def _arrive(browser, sp):
    arrival = browser.login(sp, ANNA)
    return arrival.artifact, arrival.request_id


# -- the real node's response --------------------------------------------------------


def _fixture_cert() -> bytes:
    envelope = parse(FIXTURE.read_bytes())
    der = base64.b64decode(envelope.findtext(".//ds:X509Certificate", namespaces=NS))
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_the_real_response_has_the_shape_the_stand_in_mirrors():
    envelope = parse(FIXTURE.read_bytes())
    outer = m.soap_body(envelope)
    inner = outer.find("saml2p:Response", NS)

    assert etree.QName(outer).localname == "ArtifactResponse"
    for signed in (outer, inner):
        signature = signed.find("ds:Signature", NS)
        assert signature.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm") == (
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
        )
        reference = signature.find("ds:SignedInfo/ds:Reference", NS)
        assert reference.get("URI") == "#" + signed.get("ID")
        assert signed.findtext("saml2:Issuer", namespaces=NS) == "int.login.gov.pl"
    assert m.status_codes(inner) == [m.STATUS_PREFIX + "AuthnFailed"]
    params = inner.find(".//xenc11:ConcatKDFParams", NS)
    decoded = [bytes.fromhex(params.get(n)) for n in ("AlgorithmID", "PartyUInfo", "PartyVInfo")]
    assert [int.from_bytes(d[:4], "big") == len(d) - 4 for d in decoded] == [True] * 3
    assert [d[4:] for d in decoded] == [
        b"http://www.w3.org/2001/04/xmlenc#kw-aes256",
        b"int.login.gov.pl",
        b"otwartedane",
    ]
    assert inner.find(".//xenc:AgreementMethod/xenc:OriginatorKeyInfo", NS) is not None
    assert inner.find(".//xenc:AgreementMethod/xenc:RecipientKeyInfo", NS) is None


def test_the_real_response_is_refused_as_tampered_without_a_crash(make_sp, sp_settings):
    envelope = FIXTURE.read_bytes()
    node_like = WkSettings(
        **{
            **sp_settings.__dict__,
            "sp_entity_id": "otwartedane",
            "node_entity_id": "int.login.gov.pl",
            "node_cert_pem": _fixture_cert(),
        }
    )
    sp = make_sp(
        httpx.MockTransport(lambda request: httpx.Response(200, content=envelope)),
        settings=node_like,
    )
    artifact = m.Artifact.new("int.login.gov.pl").encode()

    with pytest.raises(LoginFailed) as caught:
        sp.resolve(artifact, "ID-d4a07363-aebe-496f-9243-3cc346c3ceb6-LINK-1867")

    # Its digests no longer match the re-serialized content (see the fixture's README).
    assert caught.value.reason == FailureReason.BAD_SIGNATURE


def test_the_real_encrypted_assertion_is_read_but_not_decryptable_by_a_stranger():
    envelope = parse(FIXTURE.read_bytes())
    (encrypted,) = envelope.findall(".//saml2:EncryptedAssertion", NS)
    (data,) = encrypted.findall("xenc:EncryptedData", NS)
    (encrypted_key,) = data.findall("ds:KeyInfo/xenc:EncryptedKey", NS)
    ec_key = encrypted_key.find(
        "ds:KeyInfo/xenc:AgreementMethod/xenc:OriginatorKeyInfo/ds:KeyValue/dsig11:ECKeyValue",
        NS,
    )

    # The node's structure as the service reads it: AES-256-GCM content under a key
    # wrapped with kw-aes256, agreed by ECDH-ES from the node's ephemeral P-256 key.
    assert data.find("xenc:EncryptionMethod", NS).get("Algorithm") == AES256_GCM
    agreement = _read_agreement(encrypted_key)
    assert agreement.wrap_algorithm == KW_AES256
    assert agreement.other_info == (
        b"\x00\x00\x00\x2a"
        + KW_AES256.encode()
        + b"\x00\x00\x00\x10int.login.gov.pl"
        + b"\x00\x00\x00\x0botwartedane"
    )
    assert agreement.originator.curve.name == "secp256r1"
    assert agreement.originator.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ) == base64.b64decode(ec_key.findtext("dsig11:PublicKey", namespaces=NS))
    assert len(agreement.wrapped_key) == 40  # a 256-bit content key and its 8-byte check

    # Everything up to the key agreement goes through with our key; the content key the node
    # wrapped for the original service provider does not unwrap under what we derive.
    with pytest.raises(DecryptionError) as caught:
        decrypt_assertion(encrypted, ec.generate_private_key(ec.SECP256R1()))

    assert str(caught.value) == "the content key does not unwrap"
