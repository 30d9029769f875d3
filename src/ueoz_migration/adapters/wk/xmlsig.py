"""Parse, sign and verify the node's XML messages.

The profile fixes one signature shape: enveloped, exclusive c14n, ecdsa-sha256 on
P-256, SHA-256 digests, the certificate in `X509Data`. Verification accepts only that
shape (KeyInfo, which may be absent, is never read), only the configured certificate
(never the one inside the message), and only a
signature that is a direct child of the element it is asked about and whose single
Reference points at that element's own, document-unique ID. Together these refuse the
signature wrapping tricks: a signature moved elsewhere, a second element with the same
ID, a reference to a different element, a transform that selects something else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import threading
from typing import NamedTuple
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from lxml import etree

from .keys import cert_base64

NS = {
    "soap": "http://schemas.xmlsoap.org/soap/envelope/",
    "saml2": "urn:oasis:names:tc:SAML:2.0:assertion",
    "saml2p": "urn:oasis:names:tc:SAML:2.0:protocol",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "dsig11": "http://www.w3.org/2009/xmldsig11#",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
    "xenc11": "http://www.w3.org/2009/xmlenc11#",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "eidas": "http://eidas.europa.eu/saml-extensions",
    "naturalperson": "http://eidas.europa.eu/attributes/naturalperson",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "ec": "http://www.w3.org/2001/10/xml-exc-c14n#",
}

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
# The node lists these prefixes; signing the same way keeps the stand-in byte-compatible.
INCLUSIVE_PREFIXES = "ds saml2 saml2p xenc"

DS_SIGNATURE = f"{{{NS['ds']}}}Signature"
_ISSUER = f"{{{NS['saml2']}}}Issuer"


class XmlError(ValueError):
    """The XML is not well-formed or uses a forbidden construct."""


class SignatureError(ValueError):
    """A signature is missing, of the wrong shape, or does not verify."""


def parse(data: bytes) -> etree._Element:
    """Parse untrusted XML: no DTD, no entities, no network, no comments.

    Comments are dropped while parsing so that a comment slipped into a signed text
    (which exclusive c14n ignores) can never cut that text short when it is read.
    """
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise XmlError("a DOCTYPE is not allowed")
    return root


class Signer:
    """A P-256 private key and its certificate, loaded once, that sign elements.

    Signing is done here rather than by libxmlsec1: only our own, trusted messages
    are signed, the profile fixes a single signature shape, and libxmlsec1's
    node-set canonicalization made each signature cost ~0.5 ms where lxml's
    (the same libxml2 c14n code, without the node-set walk) and `cryptography`'s
    ECDSA take ~0.1 ms. Whatever is signed here is checked by `Verifier` on the
    receiving side, so a mistake would refuse logins, never let one in; the tests
    also check every kind of message signed here with libxmlsec1.
    """

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("the signing key must be EC P-256")
        self._key = key
        self._cert_b64 = cert_base64(cert_pem)

    def sign(
        self, element: etree._Element, inclusive_prefixes: str | None = INCLUSIVE_PREFIXES
    ) -> etree._Element:
        """Sign `element` in place (after its Issuer, as SAML wants) and return it."""
        element_id = element.get("ID")
        if not element_id:
            raise SignatureError("the element to sign has no ID")
        if has_signature(element):
            raise SignatureError("the element is already signed")
        # The enveloped-signature transform removes exactly the Signature inserted
        # below (it carries no tail), so the digest is over the element as it stands.
        prefixes = inclusive_prefixes.split() if inclusive_prefixes else None
        digest = hashlib.sha256(_exc_c14n(element, prefixes)).digest()

        # The layout (newlines included) is the one libxmlsec1's templates produce;
        # parsed from text, which costs a quarter of building it node by node.
        signature = etree.fromstring(
            _SIGNATURE_TEMPLATE.format(
                uri=escape(f"#{element_id}", {'"': "&quot;"}),
                c14n=(
                    _INCLUSIVE_TEMPLATE.format(prefixes=escape(inclusive_prefixes))
                    if inclusive_prefixes
                    else "/>"
                ),
                digest=base64.b64encode(digest).decode("ascii"),
                cert=self._cert_b64,
            )
        )
        signed_info, value = signature[0], signature[1]
        issuer = element.find(_ISSUER)
        element.insert(0 if issuer is None else element.index(issuer) + 1, signature)
        # SignedInfo is canonicalized where it sits, with the namespaces in scope there.
        der = self._key.sign(_exc_c14n(signed_info, None), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        raw = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode("ascii")
        value.text = "\n".join(raw[i : i + 64] for i in range(0, len(raw), 64))
        return element


_SIGNATURE_TEMPLATE = f"""\
<ds:Signature xmlns:ds="{NS["ds"]}">
<ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>
<ds:SignatureMethod Algorithm="{ECDSA_SHA256}"/>
<ds:Reference URI="{{uri}}">
<ds:Transforms>
<ds:Transform Algorithm="{ENVELOPED}"/>
<ds:Transform Algorithm="{EXC_C14N}"{{c14n}}
</ds:Transforms>
<ds:DigestMethod Algorithm="{SHA256}"/>
<ds:DigestValue>{{digest}}</ds:DigestValue>
</ds:Reference>
</ds:SignedInfo>
<ds:SignatureValue/>
<ds:KeyInfo>
<ds:X509Data>
<ds:X509Certificate>{{cert}}</ds:X509Certificate>
</ds:X509Data>
</ds:KeyInfo>
</ds:Signature>"""
_INCLUSIVE_TEMPLATE = f""">
<InclusiveNamespaces xmlns="{EXC_C14N}" PrefixList="{{prefixes}}"/>
</ds:Transform>"""


def _exc_c14n(element: etree._Element, inclusive_prefixes: list[str] | None) -> bytes:
    # lxml canonicalizes a subtree with every namespace in scope at it, as the
    # node set of a same-document reference would have it; comments never count.
    if inclusive_prefixes:
        _known_on_this_thread(inclusive_prefixes)
    return etree.tostring(
        element,
        method="c14n",
        exclusive=True,
        with_comments=False,
        inclusive_ns_prefixes=inclusive_prefixes,
    )


def _known_on_this_thread(prefixes: list[str]) -> None:
    """Put `prefixes` into this thread's lxml dictionary, once.

    lxml hands libxml2 only the InclusiveNamespaces prefixes already in the dictionary it
    canonicalizes with and silently drops the others, so a digest would be computed as if
    they were not listed. That dictionary is the document's for a root element and this
    thread's for one below it (lxml copies the document's head onto a dictionary of the
    thread): a document parsed or built on another thread, or a prefix declared only by
    code (lxml does not intern those), could miss one. Parsing a declaration of each
    prefix here interns it in this thread's dictionary, which every document this thread
    builds or parses shares. Our documents are built or parsed on the thread that signs
    or verifies them; `tests/wk/test_verifier.py` checks a tree verified on another one.
    """
    known: set[str] = _THREAD.__dict__.setdefault("prefixes", set())
    missing = [prefix for prefix in prefixes if prefix not in known]
    if missing:
        declarations = " ".join(f'xmlns:{prefix}="urn:prefix"' for prefix in missing)
        try:
            etree.fromstring(f"<prefixes {declarations}/>")
        except etree.XMLSyntaxError:  # "xml" or "xmlns", which no document may declare
            raise SignatureError("InclusiveNamespaces lists a reserved prefix") from None
        if len(known) > 64:  # a message names its own prefixes: remember a few, not all
            known.clear()
        known.update(missing)


_THREAD = threading.local()


class Verifier:
    """The one certificate a party's signatures are checked against, loaded once.

    Written here rather than left to libxmlsec1, for the same reason as `Signer`: the
    profile fixes one signature shape, and libxmlsec1 spent ~0.4 ms a signature walking
    its node set while canonicalizing, where lxml's c14n (libxml2's own code) and
    `cryptography`'s ECDSA take ~0.2 ms; a login checks four. signxml, the library that
    does this on lxml and `cryptography`, took twice libxmlsec1's time. What it checks:

    - the shape, pinned whole by `_pinned_shape`: anything else is refused, never read
      past;
    - the digest, over exactly the element object the caller then reads (not one looked
      up again by its ID), with the Signature removed as the enveloped transform says;
    - the ECDSA P-256 signature over SignedInfo, with the configured key only: the
      certificate inside the message is never read.

    `tests/wk/test_verifier.py` holds it to libxmlsec1's verdict, message by message
    and tampering by tampering.
    """

    def __init__(self, cert_pem: bytes) -> None:
        key = x509.load_pem_x509_certificate(cert_pem).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("the certificate's key must be EC P-256")
        self._key = key

    def verify(self, element: etree._Element) -> None:
        """Check the enveloped signature of `element` itself, or raise SignatureError."""
        element_id = element.get("ID")
        if not element_id:
            raise SignatureError("the signed element has no ID")
        signatures = [child for child in element if child.tag == DS_SIGNATURE]
        if len(signatures) != 1:
            raise SignatureError(f"expected one signature on the element, found {len(signatures)}")
        signature = signatures[0]
        shape = _pinned_shape(signature, element_id)
        # Whatever looks the signed element up by its ID (python3-saml does; libxml2 does
        # for xml:id) must find this element and no other.
        if _carrying_id(element.getroottree().getroot(), element_id) != [element]:
            raise SignatureError("the signed ID is not unique in the document")

        digest = hashlib.sha256(_without_signature_c14n(element, signature, shape.prefixes))
        if not hmac.compare_digest(digest.digest(), shape.digest):
            raise SignatureError("the digest does not match: the signed element was changed")
        try:
            self._key.verify(
                shape.signature_der,
                _exc_c14n(shape.signed_info, None),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            raise SignatureError("the signature does not verify") from None


def _carrying_id(root: etree._Element, element_id: str) -> list[etree._Element]:
    """Every element of the document with `element_id` as its ID or xml:id, in order.

    What `//*[@ID=$id or @xml:id=$id]` selects, at a fifth of its cost: that walks every
    node and builds a node set per element to compare, this one walks the attributes.
    Compiled once per thread, as an XPath object serialises the threads that share it.
    """
    query = _THREAD.__dict__.get("carrying_id")
    if query is None:
        query = _THREAD.carrying_id = etree.XPath("//@ID[. = $id]/.. | //@xml:id[. = $id]/..")
    return query(root, id=element_id)


class _Shape(NamedTuple):
    signed_info: etree._Element
    prefixes: list[str] | None
    digest: bytes
    signature_der: bytes


def _pinned_shape(signature: etree._Element, element_id: str) -> _Shape:
    """Read the one signature shape the profile allows, or raise SignatureError.

    Every element is matched by its exact place: a second Reference, an extra transform,
    an InclusiveNamespaces on SignedInfo's canonicalization, anything out of order is
    refused rather than skipped.
    """
    tags = [part.tag for part in signature]
    if tags not in ([_SIGNED_INFO, _SIGNATURE_VALUE], [_SIGNED_INFO, _SIGNATURE_VALUE, _KEY_INFO]):
        raise SignatureError("the signature is not SignedInfo, SignatureValue, KeyInfo")
    signed_info, signature_value = signature[0], signature[1]
    if [part.tag for part in signed_info] != [
        _CANONICALIZATION_METHOD,
        _SIGNATURE_METHOD,
        _REFERENCE,
    ]:
        raise SignatureError("SignedInfo is not CanonicalizationMethod, SignatureMethod, Reference")
    canonicalization, method, reference = signed_info
    if canonicalization.get("Algorithm") != EXC_C14N or len(canonicalization):
        raise SignatureError("canonicalization is not exclusive c14n")
    if method.get("Algorithm") != ECDSA_SHA256 or len(method):
        raise SignatureError("signature method is not ecdsa-sha256")
    if reference.get("URI") != f"#{element_id}":
        raise SignatureError("the signature does not refer to the element it sits in")
    if [part.tag for part in reference] != [_TRANSFORMS, _DIGEST_METHOD, _DIGEST_VALUE]:
        raise SignatureError("the Reference is not Transforms, DigestMethod, DigestValue")
    transforms, digest_method, digest_value = reference
    if digest_method.get("Algorithm") != SHA256 or len(digest_method):
        raise SignatureError("digest method is not sha256")
    algorithms = [t.get("Algorithm") if t.tag == _TRANSFORM else t.tag for t in transforms]
    if algorithms != [ENVELOPED, EXC_C14N] or len(transforms[0]):
        raise SignatureError(f"unexpected transforms {algorithms}")
    return _Shape(
        signed_info=signed_info,
        prefixes=_prefix_list(transforms[1]),
        digest=_base64(digest_value, 32, "DigestValue"),
        signature_der=_der(_base64(signature_value, 64, "SignatureValue")),
    )


def _prefix_list(transform: etree._Element) -> list[str] | None:
    """The InclusiveNamespaces PrefixList of the exclusive c14n transform, if any."""
    if not len(transform):
        return None
    inclusive = transform[0]
    if len(transform) != 1 or inclusive.tag != _INCLUSIVE_NAMESPACES or len(inclusive):
        raise SignatureError("the c14n transform carries more than InclusiveNamespaces")
    prefixes = (inclusive.get("PrefixList") or "").split()
    # lxml hands libxml2 only prefixes it knows by name, so "#default" (the default
    # namespace) would be dropped and the digest would differ: refused, not guessed at.
    if not all(_NCNAME.fullmatch(prefix) for prefix in prefixes):
        raise SignatureError("InclusiveNamespaces lists something other than prefixes")
    return prefixes or None


def _base64(element: etree._Element, size: int, name: str) -> bytes:
    if len(element):
        raise SignatureError(f"{name} holds elements")
    # Base64 in XML may be wrapped and indented with XML's whitespace; anything else,
    # a non-breaking space included, is refused as libxmlsec1 refuses it.
    text = _XML_WHITESPACE.sub("", element.text or "")
    try:
        value = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise SignatureError(f"{name} is not base64") from None
    if len(value) != size:
        raise SignatureError(f"{name} is {len(value)} bytes, not {size}")
    return value


def _der(raw: bytes) -> bytes:
    # XML-DSig writes an ECDSA signature as r and s side by side (RFC 6931 / 4050);
    # cryptography wants the DER encoding.
    return utils.encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )


def _without_signature_c14n(
    element: etree._Element, signature: etree._Element, prefixes: list[str] | None
) -> bytes:
    """Canonicalize `element` as the enveloped-signature transform leaves it.

    The transform removes the Signature element and nothing else; lxml's remove() takes
    the element's tail text with it, so the tail is put back where it stood. The tree is
    restored afterwards, whatever happens.
    """
    position = element.index(signature)
    previous = signature.getprevious()
    before = element.text if previous is None else previous.tail
    element.remove(signature)
    try:
        if signature.tail:
            joined = (before or "") + signature.tail
            if previous is None:
                element.text = joined
            else:
                previous.tail = joined
        return _exc_c14n(element, prefixes)
    finally:
        if previous is None:
            element.text = before
        else:
            previous.tail = before
        element.insert(position, signature)


_SIGNED_INFO = f"{{{NS['ds']}}}SignedInfo"
_SIGNATURE_VALUE = f"{{{NS['ds']}}}SignatureValue"
_KEY_INFO = f"{{{NS['ds']}}}KeyInfo"
_CANONICALIZATION_METHOD = f"{{{NS['ds']}}}CanonicalizationMethod"
_SIGNATURE_METHOD = f"{{{NS['ds']}}}SignatureMethod"
_REFERENCE = f"{{{NS['ds']}}}Reference"
_TRANSFORMS = f"{{{NS['ds']}}}Transforms"
_TRANSFORM = f"{{{NS['ds']}}}Transform"
_DIGEST_METHOD = f"{{{NS['ds']}}}DigestMethod"
_DIGEST_VALUE = f"{{{NS['ds']}}}DigestValue"
_INCLUSIVE_NAMESPACES = f"{{{EXC_C14N}}}InclusiveNamespaces"
_XML_WHITESPACE = re.compile(r"[ \t\r\n]+")
_NCNAME = re.compile(r"[A-Za-z_][\w.\-]*")


def select(element: etree._Element, path: str) -> list[etree._Element]:
    """Return what `element.findall(path, NS)` returns, for a path of child steps.

    Such as "saml2:Subject/saml2:NameID": the same elements in the same order, at half
    the cost (lxml sorts the namespace map into a cache key on every findall).
    """
    nodes = [element]
    for tag in _child_steps(path):
        nodes = [child for node in nodes for child in node if child.tag == tag]
    return nodes


def select_one(element: etree._Element, path: str) -> etree._Element | None:
    """Return what `element.find(path, NS)` returns, for a path of child steps."""
    found = select(element, path)
    return found[0] if found else None


@functools.cache
def _child_steps(path: str) -> tuple[str, ...]:
    steps = []
    for step in path.split("/"):
        prefix, colon, local = step.partition(":")
        if not colon:
            prefix, local = "", step
        if not local or any(c in local for c in "*[]@.{}:") or (colon and prefix not in NS):
            raise ValueError(f"not a path of child steps: {path!r}")
        steps.append(f"{{{NS[prefix]}}}{local}" if colon else local)
    return tuple(steps)


def has_signature(element: etree._Element) -> bool:
    """Tell whether `element` carries its own enveloped signature."""
    return any(child.tag == DS_SIGNATURE for child in element)
