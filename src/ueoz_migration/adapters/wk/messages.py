"""Build and take apart the SAML messages of the node's profile.

Both sides use these: the service provider builds AuthnRequest, ArtifactResolve and
LogoutRequest; the stand-in node reads them. Signing is the caller's (see xmlsig).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import uuid
from dataclasses import dataclass

from lxml import etree

from .keys import cert_base64
from .xmlsig import NS, XmlError, select, select_one

SAML2 = NS["saml2"]
SAML2P = NS["saml2p"]
SOAP = NS["soap"]

BINDING_ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_SOAP = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
ATTRNAME_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
STATUS_PREFIX = "urn:oasis:names:tc:SAML:2.0:status:"
STATUS_SUCCESS = STATUS_PREFIX + "Success"
NATURAL_PERSON = "http://eidas.europa.eu/attributes/naturalperson/"
ATTRIBUTES = ("CurrentGivenName", "CurrentFamilyName", "DateOfBirth", "PersonIdentifier")
#: The eIDAS form of a Polish person identifier issued for Poland: ``PL/PL/`` then the PESEL.
EIDAS_PL_PL = "PL/PL/"
LOA_ORDER = {
    f"http://eidas.europa.eu/LoA/{level}": rank
    for rank, level in enumerate(("low", "substantial", "high"))
}
ARTIFACT_TYPE = 0x0004


def q(prefix: str, name: str) -> str:
    """Return the Clark name `{namespace}name` for a profile prefix."""
    return f"{{{NS[prefix]}}}{name}"


def new_id() -> str:
    """Return a fresh message ID (an NCName, as the node's are)."""
    return f"ID-{uuid.uuid4()}"


def saml_time(moment: dt.datetime) -> str:
    """Format a UTC instant as SAML wants it, with milliseconds like the node."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str | None) -> dt.datetime:
    """Read a SAML instant; it must carry a time zone."""
    if not text:
        raise XmlError("missing instant")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise XmlError(f"not an instant: {text!r}") from None
    if moment.tzinfo is None:
        raise XmlError(f"instant without time zone: {text!r}")
    return moment.astimezone(dt.UTC)


def text_of(element: etree._Element | None) -> str:
    """Return the whole text of a leaf element, stripped."""
    if element is None:
        return ""
    if len(element):
        raise XmlError(f"{etree.QName(element).localname} must hold text only")
    return (element.text or "").strip()


def _saml_root(
    prefix: str, name: str, prefixes: tuple[str, ...] = ("saml2", "saml2p", "ds"), **attrs: str
) -> etree._Element:
    # Parsed rather than built, so that its prefixes sit in the document's dictionary
    # where lxml looks up InclusiveNamespaces prefixes: the signer then canonicalizes
    # the message in place instead of a parsed copy (see xmlsig._exc_c14n).
    declarations = " ".join(f'xmlns:{p}="{NS[p]}"' for p in prefixes)
    root = etree.fromstring(f"<{prefix}:{name} {declarations}/>")
    for key, value in attrs.items():
        root.set(key, value)
    return root


def _issuer(parent: etree._Element, issuer: str) -> None:
    etree.SubElement(parent, q("saml2", "Issuer")).text = issuer


def authn_request(
    *,
    request_id: str,
    issued_at: dt.datetime,
    issuer: str,
    destination: str,
    acs_url: str,
    loa_uri: str,
) -> etree._Element:
    """Build the unsigned AuthnRequest of the profile."""
    root = _saml_root(
        "saml2p",
        "AuthnRequest",
        ("saml2", "saml2p", "ds", "eidas"),
        AssertionConsumerServiceURL=acs_url,
        Destination=destination,
        ForceAuthn="true",
        ID=request_id,
        IssueInstant=saml_time(issued_at),
        ProtocolBinding=BINDING_ARTIFACT,
        Version="2.0",
    )
    _issuer(root, issuer)
    extensions = etree.SubElement(root, q("saml2p", "Extensions"))
    etree.SubElement(extensions, q("eidas", "SPType")).text = "public"
    requested = etree.SubElement(extensions, q("eidas", "RequestedAttributes"))
    for name in ATTRIBUTES:
        etree.SubElement(
            requested,
            q("eidas", "RequestedAttribute"),
            {
                "FriendlyName": name,
                "Name": NATURAL_PERSON + name,
                "NameFormat": ATTRNAME_URI,
                "isRequired": "true",
            },
        )
    etree.SubElement(
        root, q("saml2p", "NameIDPolicy"), AllowCreate="true", Format=NAMEID_UNSPECIFIED
    )
    context = etree.SubElement(root, q("saml2p", "RequestedAuthnContext"), Comparison="minimum")
    etree.SubElement(context, q("saml2", "AuthnContextClassRef")).text = loa_uri
    return root


def artifact_resolve(
    *, message_id: str, issued_at: dt.datetime, issuer: str, destination: str, artifact: str
) -> etree._Element:
    """Build the unsigned ArtifactResolve."""
    root = _saml_root(
        "saml2p",
        "ArtifactResolve",
        Destination=destination,
        ID=message_id,
        IssueInstant=saml_time(issued_at),
        Version="2.0",
    )
    _issuer(root, issuer)
    etree.SubElement(root, q("saml2p", "Artifact")).text = artifact
    return root


def logout_request(
    *,
    message_id: str,
    issued_at: dt.datetime,
    issuer: str,
    destination: str,
    name_id: str,
    session_index: str,
) -> etree._Element:
    """Build the unsigned LogoutRequest for one node session."""
    root = _saml_root(
        "saml2p",
        "LogoutRequest",
        Destination=destination,
        ID=message_id,
        IssueInstant=saml_time(issued_at),
        Version="2.0",
    )
    _issuer(root, issuer)
    etree.SubElement(root, q("saml2", "NameID"), Format=NAMEID_UNSPECIFIED).text = name_id
    etree.SubElement(root, q("saml2p", "SessionIndex")).text = session_index
    return root


def status(parent: etree._Element, code: str, message: str | None = None) -> etree._Element:
    """Append a Status with one top-level code (the node's way) to `parent`."""
    element = etree.SubElement(parent, q("saml2p", "Status"))
    etree.SubElement(element, q("saml2p", "StatusCode"), Value=code)
    if message:
        etree.SubElement(element, q("saml2p", "StatusMessage")).text = message
    return element


def status_codes(parent: etree._Element) -> list[str]:
    """Return the status codes of a message, top level first, nested ones after."""
    codes = []
    node = select_one(parent, "saml2p:Status/saml2p:StatusCode")
    while node is not None:
        codes.append(node.get("Value", ""))
        node = select_one(node, "saml2p:StatusCode")
    if not codes:
        raise XmlError("message without a status")
    return codes


def soap_envelope(body: etree._Element) -> bytes:
    """Wrap a message in a SOAP 1.1 envelope."""
    envelope = etree.Element(q("soap", "Envelope"), nsmap={"soap": SOAP})
    etree.SubElement(envelope, q("soap", "Header"))
    etree.SubElement(envelope, q("soap", "Body")).append(body)
    return etree.tostring(envelope, xml_declaration=False, encoding="UTF-8")


def soap_fault(reason: str) -> bytes:
    """Build a SOAP 1.1 client fault."""
    envelope = etree.Element(q("soap", "Envelope"), nsmap={"soap": SOAP})
    body = etree.SubElement(envelope, q("soap", "Body"))
    fault = etree.SubElement(body, q("soap", "Fault"))
    etree.SubElement(fault, "faultcode").text = "soap:Client"
    etree.SubElement(fault, "faultstring").text = reason
    return etree.tostring(envelope, encoding="UTF-8")


def soap_body(envelope: etree._Element) -> etree._Element:
    """Return the single element in a SOAP envelope's Body."""
    if envelope.tag != q("soap", "Envelope"):
        raise XmlError("not a SOAP 1.1 envelope")
    bodies = select(envelope, "soap:Body")
    if len(bodies) != 1:
        raise XmlError("a SOAP envelope needs exactly one Body")
    children = [child for child in bodies[0] if isinstance(child.tag, str)]
    if len(children) != 1:
        raise XmlError("a SOAP Body must carry exactly one message")
    return children[0]


@dataclass(frozen=True)
class Artifact:
    """A SAML 2.0 type 0x0004 artifact."""

    endpoint_index: int
    source_id: bytes
    message_handle: bytes

    @staticmethod
    def source_id_for(entity_id: str) -> bytes:
        return hashlib.sha1(entity_id.encode()).digest()  # noqa: S324 (fixed by SAML)

    @classmethod
    def new(cls, entity_id: str, endpoint_index: int = 0) -> Artifact:
        return cls(endpoint_index, cls.source_id_for(entity_id), os.urandom(20))

    def encode(self) -> str:
        raw = (
            ARTIFACT_TYPE.to_bytes(2, "big")
            + self.endpoint_index.to_bytes(2, "big")
            + self.source_id
            + self.message_handle
        )
        return base64.b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Artifact:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise XmlError("the artifact is not base64") from None
        if len(raw) != 44 or int.from_bytes(raw[:2], "big") != ARTIFACT_TYPE:
            raise XmlError("not a type 0x0004 artifact")
        return cls(int.from_bytes(raw[2:4], "big"), raw[4:24], raw[24:44])


def sp_metadata(
    *,
    entity_id: str,
    acs_url: str,
    slo_url: str,
    signing_cert_pem: bytes,
    encryption_cert_pem: bytes,
) -> etree._Element:
    """Build the service provider's metadata (unsigned)."""
    md = NS["md"]
    root = etree.Element(
        f"{{{md}}}EntityDescriptor", entityID=entity_id, nsmap={"md": md, "ds": NS["ds"]}
    )
    sp = etree.SubElement(
        root,
        f"{{{md}}}SPSSODescriptor",
        AuthnRequestsSigned="true",
        WantAssertionsSigned="false",
        protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol",
    )
    for use, pem in (("signing", signing_cert_pem), ("encryption", encryption_cert_pem)):
        descriptor = etree.SubElement(sp, f"{{{md}}}KeyDescriptor", use=use)
        info = etree.SubElement(descriptor, q("ds", "KeyInfo"))
        data = etree.SubElement(info, q("ds", "X509Data"))
        etree.SubElement(data, q("ds", "X509Certificate")).text = cert_base64(pem)
    if slo_url:
        etree.SubElement(sp, f"{{{md}}}SingleLogoutService", Binding=BINDING_SOAP, Location=slo_url)
    etree.SubElement(sp, f"{{{md}}}NameIDFormat").text = NAMEID_UNSPECIFIED
    etree.SubElement(
        sp,
        f"{{{md}}}AssertionConsumerService",
        Binding=BINDING_ARTIFACT,
        Location=acs_url,
        index="1",
        isDefault="true",
    )
    return root
