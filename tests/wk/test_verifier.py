"""The signature verifier, held to libxmlsec1's verdict.

`xmlsig.Verifier` checks the profile's one signature shape with lxml's c14n and
`cryptography`'s ECDSA. Here every kind of signed message of a login and a logout is
checked by it and by libxmlsec1 (python-xmlsec, as python3-saml uses it), untouched and
after each of some two thousand changes an attacker or a careless peer could make. The
two must agree, except on shapes XML-DSig allows and the profile does not: those only ours
refuses.
"""

from __future__ import annotations

import base64
import copy
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
import xmlsec
from cryptography.hazmat.primitives import serialization
from lxml import etree

from ueoz_migration.adapters.wk import messages as m
from ueoz_migration.adapters.wk import xmlsig
from ueoz_migration.adapters.wk.ecdh import decrypt_assertion
from ueoz_migration.adapters.wk.keys import KeyPair, dev_pair
from ueoz_migration.adapters.wk.settings import ARTIFACT_RESOLUTION_PATH, LOGOUT_PATH
from ueoz_migration.adapters.wk.xmlsig import (
    DS_SIGNATURE,
    NS,
    SignatureError,
    Signer,
    Verifier,
    parse,
    select,
    select_one,
)

from .conftest import ANNA, Browser, Recording

KINDS = (
    "AuthnRequest",
    "ArtifactResolve",
    "ArtifactResponse",
    "Response",
    "Assertion",
    "LogoutRequest",
    "LogoutResponse",
    "EntityDescriptor",
)


@dataclass(frozen=True)
class Message:
    """A signed message as it crossed the wire, and where in it the signed element is."""

    kind: str
    data: bytes
    locate: Callable[[etree._Element], etree._Element]
    signer: KeyPair
    stranger: KeyPair  # the other party: its certificate must not verify this message

    def signed_element(self, data: bytes | None = None) -> etree._Element:
        return self.locate(parse(self.data if data is None else data))


def libxmlsec1_accepts(element: etree._Element, cert_pem: bytes) -> bool:
    """XML-DSig's verdict by libxmlsec1 alone: the key given, no shape pinned."""
    signature = next((child for child in element if child.tag == DS_SIGNATURE), None)
    if signature is None:
        return False
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(cert_pem, xmlsec.KeyFormat.CERT_PEM)
    try:
        context.register_id(element, "ID")
        context.verify(signature)
    except xmlsec.Error:
        return False
    return True


def ours_accepts(element: etree._Element, cert_pem: bytes) -> bool:
    try:
        Verifier(cert_pem).verify(element)
    except SignatureError:
        return False
    return True


@pytest.fixture
def node_pair(instance_dir) -> KeyPair:
    return dev_pair(instance_dir / "wk", "standin-signing", "WK stand-in node")


@pytest.fixture
def messages(make_standin, make_sp, sp_settings, node_pair) -> dict[str, Message]:
    """One of each signed message of a login and a logout."""
    app = make_standin(sign_assertion=True)
    channel = Recording(app)
    sp = make_sp(channel)
    form = sp.authn_request("rs-1")
    arrival = Browser(app).login(sp, ANNA)
    identity = sp.resolve(arrival.artifact, arrival.request_id)
    sp.logout_request(identity.name_id, identity.session_index)
    [(resolve, answer)] = channel.at(ARTIFACT_RESOLUTION_PATH)
    [(logout, logged_out)] = channel.at(LOGOUT_PATH)
    encrypted = select_one(m.soap_body(parse(answer)), "saml2p:Response/saml2:EncryptedAssertion")
    decryption_key = serialization.load_pem_private_key(sp_settings.sp_encryption.key_pem, None)
    assertion = decrypt_assertion(encrypted, decryption_key)

    def itself(root: etree._Element) -> etree._Element:
        return root

    def response(root: etree._Element) -> etree._Element:
        return select(m.soap_body(root), "saml2p:Response")[0]

    ours, node = sp_settings.sp_signing, node_pair
    return {
        message.kind: message
        for message in (
            Message("AuthnRequest", base64.b64decode(form.saml_request), itself, ours, node),
            Message("ArtifactResolve", resolve, m.soap_body, ours, node),
            Message("ArtifactResponse", answer, m.soap_body, node, ours),
            Message("Response", answer, response, node, ours),
            Message("Assertion", assertion, itself, node, ours),
            Message("LogoutRequest", logout, m.soap_body, ours, node),
            Message("LogoutResponse", logged_out, m.soap_body, node, ours),
            Message("EntityDescriptor", sp.metadata_xml().encode(), itself, ours, node),
        )
    }


@pytest.mark.parametrize("kind", KINDS)
def test_each_message_as_sent_is_accepted_by_both(messages, kind):
    message = messages[kind]

    assert libxmlsec1_accepts(message.signed_element(), message.signer.cert_pem)
    assert ours_accepts(message.signed_element(), message.signer.cert_pem)


@pytest.mark.parametrize("kind", KINDS)
def test_each_message_is_refused_by_both_against_the_other_partys_certificate(messages, kind):
    message = messages[kind]

    assert not libxmlsec1_accepts(message.signed_element(), message.stranger.cert_pem)
    assert not ours_accepts(message.signed_element(), message.stranger.cert_pem)


class Change(NamedTuple):
    """A change made to a freshly parsed message, through its signed element."""

    what: str
    apply: Callable[[etree._Element], None]
    # Comments do not survive our parser: a change adding one is checked on the tree it
    # was made in (as when something else builds it), the rest as they arrive over the wire.
    in_memory: bool = False
    # XML-DSig lets it pass and the profile does not: another element claiming the signed
    # ID (ambiguous to whatever looks elements up by ID, python3-saml included), or a
    # comment among the parts of the signature it reads, whose shape is pinned child by
    # child (our parser drops comments: only a tree built otherwise could have one).
    only_ours_refuse: bool = False


def _changes(signed: etree._Element, stranger_cert_pem: bytes) -> Iterator[Change]:
    """Every change of one node of the signed element, and some around it.

    Each change finds its node again by position, so that it applies to a fresh parse.
    """
    signature = _signature_of(signed)
    key_info = select_one(signature, "ds:KeyInfo")
    for path, node in _positions(signed):
        name = f"{etree.QName(node).localname} at {path}"
        around = [node, *node.iterancestors()]
        pinned = signature in around and key_info not in around  # KeyInfo is never read
        if node.text and node.text.strip():
            yield Change(f"text of {name} extended", _at(path, _extend_text))
            yield Change(f"text of {name} rewrapped", _at(path, _rewrap_text))
            yield Change(f"no-break space in the text of {name}", _at(path, _no_break_space))
        for attribute in node.attrib:
            yield Change(f"@{attribute} of {name} changed", _at(path, _change_attribute(attribute)))
        yield Change(f"attribute added to {name}", _at(path, _add_attribute))
        yield Change(f"unused namespace declared on {name}", _at(path, _declare("extra", "urn:x")))
        yield Change(f"listed prefix rebound on {name}", _at(path, _declare("xenc", "urn:x")))
        yield Change(
            f"comment added in {name}",
            _at(path, _add_comment),
            in_memory=True,
            only_ours_refuse=pinned,
        )
        if path:
            yield Change(f"{name} removed", _at(path, _remove))
            yield Change(f"whitespace after {name}", _at(path, _add_tail))
            yield Change(f"{name} repeated", _at(path, _repeat))
    for depth, ancestor in enumerate(signed.iterancestors(), start=1):
        name = f"{etree.QName(ancestor).localname}, {depth} up"
        yield Change(f"xml:space on {name}", _up(depth, _set(f"{{{XML_NS}}}space", "preserve")))
        yield Change(f"xml:lang on {name}", _up(depth, _set(f"{{{XML_NS}}}lang", "pl")))
        yield Change(f"unused namespace declared on {name}", _up(depth, _declare("extra", "urn:x")))
        yield Change(f"listed prefix rebound on {name}", _up(depth, _declare("xenc", "urn:x")))
    yield Change("signature moved to the end", _move_signature(-1))
    yield Change("signature moved to the start", _move_signature(0))
    yield Change("signature moved into the first child", _signature_into_child)
    yield Change("another element given the signed ID", _duplicate_id("ID"), only_ours_refuse=True)
    yield Change("another element given the signed ID as xml:id", _duplicate_id(f"{{{XML_NS}}}id"))
    yield Change(
        "an element in KeyInfo given the signed ID", _id_in_key_info("ID"), only_ours_refuse=True
    )
    yield Change(
        "an element in KeyInfo given the signed ID as xml:id", _id_in_key_info(f"{{{XML_NS}}}id")
    )
    yield Change("certificate in the message replaced", _replace_certificate(stranger_cert_pem))
    yield Change("KeyInfo removed", _remove_key_info)


XML_NS = "http://www.w3.org/XML/1998/namespace"


def _positions(root: etree._Element, path: tuple[int, ...] = ()) -> Iterator:
    yield path, root
    for index, child in enumerate(root):
        yield from _positions(child, (*path, index))


def _at(path: tuple[int, ...], change: Callable[[etree._Element], None]):
    def apply(signed: etree._Element) -> None:
        node = signed
        for index in path:
            node = node[index]
        change(node)

    return apply


def _up(depth: int, change: Callable[[etree._Element], None]):
    def apply(signed: etree._Element) -> None:
        node = signed
        for _ in range(depth):
            node = node.getparent()
        change(node)

    return apply


def _set(attribute: str, value: str):
    def change(node: etree._Element) -> None:
        node.set(attribute, value)

    return change


def _no_break_space(node: etree._Element) -> None:
    node.text = node.text[:4] + "\u00a0" + node.text[4:]


def _id_in_key_info(attribute: str):
    def change(signed: etree._Element) -> None:
        decoy = etree.SubElement(select_one(_signature_of(signed), "ds:KeyInfo"), "Decoy")
        decoy.set(attribute, signed.get("ID"))

    return change


def _extend_text(node: etree._Element) -> None:
    node.text = node.text + "A"


def _rewrap_text(node: etree._Element) -> None:
    node.text = "\n" + "\n".join(node.text[i : i + 20] for i in range(0, len(node.text), 20))


def _change_attribute(attribute: str):
    def change(node: etree._Element) -> None:
        node.set(attribute, node.get(attribute) + "x")

    return change


def _add_attribute(node: etree._Element) -> None:
    node.set("Extra", "1")


def _declare(prefix: str, uri: str):
    # lxml cannot add a declaration to an element in place: rebuild the element with it.
    def change(node: etree._Element) -> None:
        parent = node.getparent()
        if node.nsmap.get(prefix) == uri or parent is None:
            raise _Unchangeable
        clone = etree.Element(node.tag, attrib=dict(node.attrib), nsmap={prefix: uri})
        clone.text, clone.tail = node.text, node.tail
        clone.extend(list(node))
        parent.replace(node, clone)

    return change


class _Unchangeable(Exception):
    """The change does not apply to this node."""


def _add_comment(node: etree._Element) -> None:
    comment = etree.Comment(" in transit ")
    comment.tail = node.text
    node.text = None
    node.insert(0, comment)


def _remove(node: etree._Element) -> None:
    parent = node.getparent()
    previous = node.getprevious()
    if node.tail:
        if previous is None:
            parent.text = (parent.text or "") + node.tail
        else:
            previous.tail = (previous.tail or "") + node.tail
    parent.remove(node)


def _add_tail(node: etree._Element) -> None:
    node.tail = (node.tail or "") + "\n"


def _repeat(node: etree._Element) -> None:
    node.addnext(copy.deepcopy(node))


def _signature_of(signed: etree._Element) -> etree._Element:
    return next(child for child in signed if child.tag == DS_SIGNATURE)


def _move_signature(position: int):
    def change(signed: etree._Element) -> None:
        signature = _signature_of(signed)
        signed.remove(signature)
        if position < 0:
            signed.append(signature)
        else:
            signed.insert(position, signature)

    return change


def _signature_into_child(signed: etree._Element) -> None:
    signature = _signature_of(signed)
    signed.remove(signature)
    signed[0].append(signature)


def _duplicate_id(attribute: str):
    def change(signed: etree._Element) -> None:
        root = signed.getroottree().getroot()
        decoy = etree.Element("Decoy")
        decoy.set(attribute, signed.get("ID"))
        if root is signed:
            signed.append(decoy)  # inside the signed element: the digest changes too
        else:
            root.insert(0, decoy)

    return change


def _replace_certificate(cert_pem: bytes):
    def change(signed: etree._Element) -> None:
        certificate = select_one(_signature_of(signed), "ds:KeyInfo/ds:X509Data/ds:X509Certificate")
        certificate.text = "".join(cert_pem.decode().splitlines()[1:-1])

    return change


def _remove_key_info(signed: etree._Element) -> None:
    signature = _signature_of(signed)
    signature.remove(select_one(signature, "ds:KeyInfo"))


@pytest.mark.parametrize("kind", KINDS)
def test_both_give_the_same_verdict_on_every_change(messages, kind):
    message = messages[kind]
    verdicts, only_ours_refuse = {}, set()
    for change in _changes(message.signed_element(), message.stranger.cert_pem):
        theirs_root, ours_root = (parse(message.data) for _ in range(2))
        try:
            change.apply(message.locate(theirs_root))
            change.apply(message.locate(ours_root))
        except _Unchangeable:
            continue
        if change.in_memory:
            theirs, ours = message.locate(theirs_root), message.locate(ours_root)
        else:  # re-read from text, as the change would arrive over the wire
            theirs = message.locate(parse(etree.tostring(theirs_root)))
            ours = message.locate(parse(etree.tostring(ours_root)))
        verdicts[change.what] = (
            libxmlsec1_accepts(theirs, message.signer.cert_pem),
            ours_accepts(ours, message.signer.cert_pem),
        )
        if change.only_ours_refuse:
            only_ours_refuse.add(change.what)

    disagreements = {
        what: verdict
        for what, verdict in verdicts.items()
        if verdict[0] != verdict[1] and what not in only_ours_refuse
    }
    assert disagreements == {}, "(libxmlsec1, ours) differ"
    assert not [what for what in only_ours_refuse if verdicts[what][1]], "ours let these pass"
    refused = [what for what, (_, accepted) in verdicts.items() if not accepted]
    # Most changes break the signature; those that must not (rewrapped base64, the
    # message's own certificate, whitespace outside, an unused namespace) pass both.
    assert len(verdicts) > 60 and len(refused) > len(verdicts) / 2, (len(verdicts), len(refused))


@dataclass(frozen=True)
class Shape:
    """How a signature is made: what SignedInfo declares."""

    c14n: xmlsec.Transform = xmlsec.Transform.EXCL_C14N
    transforms: tuple[xmlsec.Transform, ...] = (
        xmlsec.Transform.ENVELOPED,
        xmlsec.Transform.EXCL_C14N,
    )
    prefixes: str | None = "ds saml2 saml2p xenc"
    digest: xmlsec.Transform = xmlsec.Transform.SHA256
    whole_document: bool = False


PROFILE_SHAPES = {
    "the node's": Shape(),
    "without InclusiveNamespaces": Shape(prefixes=None),
    "with an empty PrefixList": Shape(prefixes=""),
    "with fewer prefixes": Shape(prefixes="saml2"),
}
# Valid XML-DSig that libxmlsec1 accepts, outside the profile: only ours refuses.
OTHER_SHAPES = {
    "#default in the PrefixList": Shape(prefixes="#default saml2"),
    "xmlns in the PrefixList": Shape(prefixes="xmlns saml2"),
    "enveloped transform only": Shape(transforms=(xmlsec.Transform.ENVELOPED,)),
    "inclusive c14n of SignedInfo": Shape(c14n=xmlsec.Transform.C14N),
    "SHA-512 digest": Shape(digest=xmlsec.Transform.SHA512),
    "a reference to the whole document": Shape(whole_document=True),
}


def _signed_by_libxmlsec1(
    message: Message, shape: Shape, *, indent: bool, position: int
) -> etree._Element:
    """The message's signed element, signed afresh by libxmlsec1 in `shape`."""
    root = parse(message.data)
    if indent:
        etree.indent(root)
    element = message.locate(root)
    element.remove(_signature_of(element))
    signature = xmlsec.template.create(element, shape.c14n, xmlsec.Transform.ECDSA_SHA256, ns="ds")
    reference = xmlsec.template.add_reference(
        signature, shape.digest, uri="" if shape.whole_document else f"#{element.get('ID')}"
    )
    for transform in shape.transforms:
        added = xmlsec.template.add_transform(reference, transform)
        if transform == xmlsec.Transform.EXCL_C14N and shape.prefixes is not None:
            xmlsec.template.transform_add_c14n_inclusive_namespaces(added, shape.prefixes)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    # The indentation before the first child and after the last, as etree.indent left it.
    inner, closing = element.text, element[-1].tail
    if position < 0:
        element.append(signature)
    else:
        element.insert(position, signature)
    if indent:  # the signature indented like its siblings, as a pretty printer would
        if position < 0:
            signature.getprevious().tail, signature.tail = inner, closing
        else:
            signature.tail = inner
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(message.signer.key_pem, xmlsec.KeyFormat.PEM)
    context.register_id(element, "ID")
    context.sign(signature)
    return message.locate(parse(etree.tostring(root)))


LAYOUTS = {
    "compact, after the Issuer": dict(indent=False, position=1),
    "indented, after the Issuer": dict(indent=True, position=1),
    "indented, first": dict(indent=True, position=0),
    "indented, last": dict(indent=True, position=-1),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["ArtifactResponse", "Response", "AuthnRequest"])
def test_profile_shapes_signed_by_libxmlsec1_are_accepted(messages, kind, layout):
    message = messages[kind]
    for name, shape in PROFILE_SHAPES.items():
        signed = _signed_by_libxmlsec1(message, shape, **LAYOUTS[layout])

        assert libxmlsec1_accepts(signed, message.signer.cert_pem), name
        assert ours_accepts(signed, message.signer.cert_pem), name
        # The whitespace around the signature is signed content: moving it is a change.
        signature = _signature_of(signed)
        signature.tail = (signature.tail or "") + " "
        assert not libxmlsec1_accepts(signed, message.signer.cert_pem), name
        assert not ours_accepts(signed, message.signer.cert_pem), name


@pytest.mark.parametrize("shape", OTHER_SHAPES)
def test_shapes_outside_the_profile_are_refused_though_libxmlsec1_takes_them(messages, shape):
    message = messages["Response"]
    signed = _signed_by_libxmlsec1(message, OTHER_SHAPES[shape], indent=False, position=1)

    assert libxmlsec1_accepts(signed, message.signer.cert_pem)
    with pytest.raises(SignatureError):
        Verifier(message.signer.cert_pem).verify(signed)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_verifying_leaves_the_message_as_it_came(messages, layout):
    # The signature is taken out while the digest is computed; whatever reads the message
    # next (python3-saml, the identity) must find it exactly as it arrived.
    message = messages["Response"]
    signed = _signed_by_libxmlsec1(message, Shape(), **LAYOUTS[layout])
    arrived = etree.tostring(signed.getroottree())
    Verifier(message.signer.cert_pem).verify(signed)
    assert etree.tostring(signed.getroottree()) == arrived

    signed.set("Destination", "https://elsewhere.example/")
    changed = etree.tostring(signed.getroottree())
    with pytest.raises(SignatureError):
        Verifier(message.signer.cert_pem).verify(signed)
    assert etree.tostring(signed.getroottree()) == changed


def _on_a_new_thread(work: Callable[[], Any]) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def test_a_tree_parsed_on_one_thread_verifies_on_another_as_on_its_own(node_pair):
    # lxml hands libxml2 only the PrefixList prefixes its dictionaries know, and for an
    # element below the root that is the dictionary of the thread doing the c14n (which
    # also sees what the main thread met). A listed prefix that only another thread has
    # met, rebound on a descendant, must still change the digest.
    prefix = f"p{uuid.uuid4().hex}"  # met by no thread yet
    legit = (
        f'<r><{prefix}:X xmlns:{prefix}="urn:a" ID="ID-x"><{prefix}:I>node</{prefix}:I>'
        f"<c>t</c></{prefix}:X></r>"
    )

    def signed_and_tampered() -> tuple[bytes, bytes]:
        root = parse(legit.encode())
        element = root[0]
        signature = xmlsec.template.create(
            element, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.ECDSA_SHA256, ns="ds"
        )
        reference = xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256, uri="#ID-x")
        xmlsec.template.add_transform(reference, xmlsec.Transform.ENVELOPED)
        xmlsec.template.transform_add_c14n_inclusive_namespaces(
            xmlsec.template.add_transform(reference, xmlsec.Transform.EXCL_C14N), [prefix]
        )
        element.insert(1, signature)
        context = xmlsec.SignatureContext()
        context.key = xmlsec.Key.from_memory(node_pair.key_pem, xmlsec.KeyFormat.PEM)
        context.register_id(element, "ID")
        context.sign(signature)
        signed = etree.tostring(root)
        return signed, signed.replace(b"<c>", f'<c xmlns:{prefix}="urn:evil">'.encode())

    signed, tampered = _on_a_new_thread(signed_and_tampered)
    trees = _on_a_new_thread(lambda: (parse(signed), parse(tampered)))

    def verified_here(tree: etree._Element) -> bool:
        parse(b"<other/>")  # this thread has a dictionary of its own, without the prefix
        return ours_accepts(tree[0], node_pair.cert_pem)

    assert not libxmlsec1_accepts(parse(tampered)[0], node_pair.cert_pem)
    assert _on_a_new_thread(lambda: verified_here(trees[0]))
    assert not _on_a_new_thread(lambda: verified_here(trees[1]))


def test_a_tree_built_in_code_on_a_new_thread_is_signed_as_libxmlsec1_reads_it(node_pair):
    # lxml interns no prefix declared by code: the signer must not lose one listed in the
    # PrefixList, on a thread that has met none of them.
    def built_and_signed() -> bytes:
        parse(b"<other/>")
        prefix = f"p{uuid.uuid4().hex}"
        root = etree.Element(
            f"{{{NS['saml2p']}}}X", nsmap={prefix: "urn:a", "saml2p": NS["saml2p"]}
        )
        root.set("ID", "ID-code")
        etree.SubElement(root, f"{{{NS['saml2']}}}Issuer").text = "node"
        Signer(node_pair.key_pem, node_pair.cert_pem).sign(root, inclusive_prefixes=prefix)
        return etree.tostring(root)

    signed = _on_a_new_thread(built_and_signed)

    assert libxmlsec1_accepts(parse(signed), node_pair.cert_pem)


def test_a_failure_while_the_signature_is_out_still_puts_it_back(messages, monkeypatch):
    message = messages["Response"]
    signed = _signed_by_libxmlsec1(message, Shape(), **LAYOUTS["indented, after the Issuer"])
    arrived = etree.tostring(signed.getroottree())

    def broken(element, prefixes):
        raise MemoryError("c14n failed")

    monkeypatch.setattr(xmlsig, "_exc_c14n", broken)
    with pytest.raises(MemoryError):
        Verifier(message.signer.cert_pem).verify(signed)
    assert etree.tostring(signed.getroottree()) == arrived
