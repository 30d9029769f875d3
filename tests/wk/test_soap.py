"""The SOAP envelope around each back-channel message: the same bytes as built as a tree."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from ueoz_migration.adapters.wk import messages as m
from ueoz_migration.adapters.wk.xmlsig import parse

from .conftest import Recording


def envelope_as_a_tree(body: etree._Element) -> bytes:
    """The envelope built node by node, the message moved into it: what lxml writes."""
    envelope = etree.Element(m.q("soap", "Envelope"), nsmap={"soap": m.SOAP})
    etree.SubElement(envelope, m.q("soap", "Header"))
    etree.SubElement(envelope, m.q("soap", "Body")).append(body)
    return etree.tostring(envelope, encoding="UTF-8")


@pytest.fixture
def wrapped(monkeypatch):
    """Every message wrapped during the test, with its envelope both ways."""
    seen: list[tuple[str, bytes, bytes]] = []
    written = m.soap_envelope

    def both_ways(body: etree._Element) -> bytes:
        as_a_tree = envelope_as_a_tree(copy.deepcopy(body))
        as_text = written(body)
        seen.append((etree.QName(body).localname, as_text, as_a_tree))
        return as_text

    monkeypatch.setattr(m, "soap_envelope", both_ways)
    return seen


def test_every_message_of_a_login_and_a_logout_is_wrapped_as_a_tree_would_be(
    make_sp, standin_app, browser, wrapped
):
    recording = Recording(standin_app)
    sp = make_sp(recording)
    arrival = browser.login(sp)
    identity = sp.resolve(arrival.artifact, arrival.request_id)
    sp.logout_request(identity.name_id, identity.session_index)
    denied = recording.exchanges[0][1]  # the ArtifactResolve again: the node denies it
    status, answer = standin_app.extensions["wk_standin"].resolve(denied)

    kinds = [kind for kind, _, _ in wrapped]
    assert kinds == [
        "ArtifactResolve",
        "ArtifactResponse",
        "LogoutRequest",
        "LogoutResponse",
        "ArtifactResponse",
    ]
    for kind, as_text, as_a_tree in wrapped:
        assert as_text == as_a_tree, kind
    sent = [body for _, request, reply in recording.exchanges for body in (request, reply)]
    assert sent == [as_text for _, as_text, _ in wrapped[:4]]
    assert status == 200 and b"RequestDenied" in answer
    assert m.soap_body(parse(answer)).tag == m.q("saml2p", "ArtifactResponse")


def test_a_message_inside_another_document_is_not_wrapped():
    parent = etree.Element("parent")
    child = etree.SubElement(parent, m.q("saml2p", "ArtifactResolve"))

    with pytest.raises(ValueError, match="root of its own document"):
        m.soap_envelope(child)
