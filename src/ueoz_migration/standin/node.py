"""What the stand-in node does, without the web: read requests, issue artifacts, answer.

It speaks the node's profile (see docs wk-profile.md): it checks the service's signed
AuthnRequest, hands out a type 0x0004 artifact, and resolves it into a signed
ArtifactResponse around a signed Response whose assertion is ECDH-ES encrypted to the
service's registered key, shaped like the node's real messages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from ..adapters.wk import messages as m
from ..adapters.wk.ecdh import encrypt_assertion
from ..adapters.wk.settings import ARTIFACT_RESOLUTION_PATH, LOGOUT_PATH, SSO_PATH
from ..adapters.wk.xmlsig import (
    NS,
    SignatureError,
    Signer,
    Verifier,
    XmlError,
    parse,
    select_one,
)
from .settings import STATUS_FAILURES, Failure, StandinSettings

# The node declares every namespace on the outermost SAML element; so does the stand-in.
_RESPONSE_NSMAP = {
    p: NS[p]
    for p in ("ds", "dsig11", "eidas", "naturalperson", "saml2", "saml2p", "xenc", "xenc11")
}
# The assertion as lxml serialises it (no declaration for UTF-8); its values are escaped
# by _text and _attr, which refuse what lxml would refuse.
_ASSERTION_TEMPLATE = (
    "<saml2:Assertion"
    + "".join(f' xmlns:{p}="{NS[p]}"' for p in ("saml2", "ds", "xsi", "naturalperson"))
    + ' ID="{id}" IssueInstant="{instant}" Version="2.0">'
    "<saml2:Issuer>{issuer}</saml2:Issuer>"
    f'<saml2:Subject><saml2:NameID Format="{m.NAMEID_UNSPECIFIED}">{{name_id}}</saml2:NameID>'
    f'<saml2:SubjectConfirmation Method="{m.BEARER}">'
    '<saml2:SubjectConfirmationData InResponseTo="{request_id}" NotOnOrAfter="{later}"'
    ' Recipient="{acs}"/></saml2:SubjectConfirmation></saml2:Subject>'
    '<saml2:Conditions NotBefore="{instant}" NotOnOrAfter="{later}">{audience_restriction}'
    "</saml2:Conditions>"
    '<saml2:AuthnStatement AuthnInstant="{instant}" SessionIndex="{session_index}">'
    "<saml2:AuthnContext><saml2:AuthnContextClassRef>{loa}</saml2:AuthnContextClassRef>"
    "</saml2:AuthnContext></saml2:AuthnStatement>"
    "<saml2:AttributeStatement>{attributes}</saml2:AttributeStatement></saml2:Assertion>"
)
_AUDIENCE_TEMPLATE = (
    "<saml2:AudienceRestriction><saml2:Audience>{audience}</saml2:Audience>"
    "</saml2:AudienceRestriction>"
)
#: Whom the assertion is for when the stand-in is told to address it to another service.
OTHER_AUDIENCE = "https://other-service.example/saml"
_ATTRIBUTE_TEMPLATE = (
    '<saml2:Attribute FriendlyName="{name}" Name="'
    + m.NATURAL_PERSON
    + '{name}" NameFormat="'
    + m.ATTRNAME_URI
    + '"><saml2:AttributeValue xsi:type="naturalperson:{name}Type">{value}'
    "</saml2:AttributeValue></saml2:Attribute>"
)
_TEXT_TAGS = tuple(
    m.q("saml2", name)
    for name in ("Issuer", "NameID", "Audience", "AuthnContextClassRef", "AttributeValue")
)
# Characters XML 1.0 cannot carry; lxml refuses them with a ValueError, and so does this.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value: str) -> str:
    if _NOT_XML.search(value):
        raise ValueError("All strings must be XML compatible")
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attr(value: str) -> str:
    return _text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


_RESPONSE_DECLARATIONS = " ".join(f'xmlns:{p}="{uri}"' for p, uri in _RESPONSE_NSMAP.items())


def _answer_root(name: str, attributes: dict[str, str]) -> etree._Element:
    """Start a signed answer of the node, declaring every namespace on it.

    Parsed rather than built, so that its prefixes sit in the document's dictionary
    where lxml looks up InclusiveNamespaces prefixes: the signer then canonicalizes
    the answer in place instead of a parsed copy (see xmlsig._exc_c14n).
    """
    root = etree.fromstring(f"<saml2p:{name} {_RESPONSE_DECLARATIONS}/>")
    for key, value in attributes.items():
        root.set(key, value)
    return root


_REPEATED_ASSERTION_ID = "ID-standin-repeated-assertion"


class BadRequest(ValueError):
    """A request the stand-in refuses (bad signature, wrong service, malformed)."""


@dataclass(frozen=True)
class Person:
    """Who logged in at the stand-in."""

    first_name: str
    last_name: str
    pesel: str
    date_of_birth: str


@dataclass(frozen=True)
class PendingLogin:
    """An AuthnRequest the stand-in accepted and is showing its login page for."""

    request_id: str
    relay_state: str
    loa_uri: str
    failure: Failure | None


@dataclass
class _Issued:
    login: PendingLogin
    person: Person | None  # None: the login was cancelled or failed
    status: str
    expires: float
    failure: Failure | None = None


@dataclass
class StandinNode:
    """The stand-in node's state and behaviour for one process."""

    settings: StandinSettings
    failure: Failure | None = None
    _artifacts: dict[str, _Issued] = field(default_factory=dict)
    _tickets: dict[str, tuple[PendingLogin, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.failure = self.failure or self.settings.failure
        self._signer = Signer(self.settings.signing.key_pem, self.settings.signing.cert_pem)
        self._sp = Verifier(self.settings.sp_signing_cert_pem)
        public_key = x509.load_pem_x509_certificate(
            self.settings.sp_encryption_cert_pem
        ).public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError("the service's encryption certificate must hold a P-256 key")
        self._sp_encryption_key = public_key

    # -- the browser's side ------------------------------------------------------

    def accept_authn_request(
        self, saml_request: str, relay_state: str, failure: Failure | None = None
    ) -> tuple[str, PendingLogin]:
        """Check the service's AuthnRequest; return a ticket for the login page."""
        try:
            request = parse(base64.b64decode(saml_request, validate=True))
        except (binascii.Error, ValueError, XmlError) as exc:
            raise BadRequest(f"SAMLRequest is not base64 XML: {exc}") from None
        if request.tag != m.q("saml2p", "AuthnRequest"):
            raise BadRequest("not an AuthnRequest")
        self._check_sp_message(request, self.settings.base_url + SSO_PATH)
        if request.get("AssertionConsumerServiceURL") != self.settings.sp_acs_url:
            raise BadRequest("AssertionConsumerServiceURL is not the registered ACS")
        if request.get("ProtocolBinding") != m.BINDING_ARTIFACT:
            raise BadRequest("only the HTTP-Artifact binding is supported")
        loa = m.text_of(
            select_one(request, "saml2p:RequestedAuthnContext/saml2:AuthnContextClassRef")
        )
        if loa not in m.LOA_ORDER:
            raise BadRequest("RequestedAuthnContext must name an eIDAS LoA")
        login = PendingLogin(request.get("ID", ""), relay_state, loa, failure)
        ticket = base64.urlsafe_b64encode(hashlib.sha256(m.new_id().encode()).digest()).decode()
        with self._lock:
            self._purge()
            self._tickets[ticket] = (login, time.monotonic() + 30 * 60)
        return ticket, login

    def pending(self, ticket: str) -> PendingLogin:
        """Return the login a ticket stands for."""
        with self._lock:
            found = self._tickets.get(ticket)
        if found is None or found[1] < time.monotonic():
            raise BadRequest("unknown or expired login")
        return found[0]

    def finish_login(
        self, ticket: str, person: Person | None, failure: Failure | None = None
    ) -> tuple[str, PendingLogin]:
        """End the login page: issue the artifact for a person (None: cancelled).

        `failure`, chosen on the page, applies to this login only.
        """
        with self._lock:
            found = self._tickets.pop(ticket, None)
        if found is None or found[1] < time.monotonic():
            raise BadRequest("unknown or expired login")
        login = found[0]
        failure = login.failure or failure or self.failure
        if person is None:
            status = m.STATUS_PREFIX + "AuthnFailed"
        elif failure in STATUS_FAILURES:
            status = m.STATUS_PREFIX + STATUS_FAILURES[failure]
        else:
            status = m.STATUS_SUCCESS
        artifact = m.Artifact.new(self.settings.entity_id, self.settings.endpoint_index).encode()
        with self._lock:
            self._artifacts[artifact] = _Issued(
                login,
                person,
                status,
                time.monotonic() + self.settings.artifact_ttl_seconds,
                failure,
            )
        return artifact, login

    # -- the back channel --------------------------------------------------------

    def resolve(self, envelope_xml: bytes) -> tuple[int, bytes]:
        """Answer a SOAP ArtifactResolve: HTTP status and body."""
        try:
            request = m.soap_body(parse(envelope_xml))
            if request.tag != m.q("saml2p", "ArtifactResolve"):
                raise BadRequest("not an ArtifactResolve")
            self._check_sp_message(request, self.settings.base_url + ARTIFACT_RESOLUTION_PATH)
        except (BadRequest, XmlError) as exc:
            return 500, m.soap_fault(str(exc))
        artifact = m.text_of(select_one(request, "saml2p:Artifact"))
        with self._lock:
            issued = self._artifacts.pop(artifact, None)
        failure = issued.failure if issued is not None else self.failure
        if failure is Failure.SLOW:
            time.sleep(self.settings.slow_seconds)
        if failure is Failure.DEAD:
            return 500, b"Internal Server Error"
        if failure is Failure.SOAP_FAULT:
            return 500, m.soap_fault("artifact resolution failed")
        now = dt.datetime.now(dt.UTC)
        if failure is Failure.EXPIRED:
            now -= dt.timedelta(hours=1)
        outer = _answer_root(
            "ArtifactResponse",
            {
                "ID": m.new_id(),
                "InResponseTo": request.get("ID", ""),
                "IssueInstant": m.saml_time(now),
                "Version": "2.0",
            },
        )
        etree.SubElement(outer, m.q("saml2", "Issuer")).text = self.settings.entity_id
        if failure is Failure.DENIED_IN_RESPONSE:
            # As if the artifact were unknown, denied the other way a node may deny it.
            m.status(outer, m.STATUS_PREFIX + "RequestDenied", "unknown artifact")
            self._signer.sign(self._denial(outer, now))
            self._signer.sign(outer)
            return 200, m.soap_envelope(outer)
        if issued is None or issued.expires < time.monotonic():
            # A used, unknown or stale artifact: a signed RequestDenied, no Response.
            m.status(outer, m.STATUS_PREFIX + "RequestDenied", "unknown artifact")
            self._signer.sign(outer)
            return 200, m.soap_envelope(outer)
        m.status(outer, m.STATUS_SUCCESS)
        response = self._response(outer, issued, now, failure)
        self._signer.sign(response)
        if failure is Failure.BAD_SIGNATURE:
            # An attacker's own assertion: anyone can encrypt to the service's key.
            forged = Person("Mallory", "Podrobiona", "44051401458", "1944-05-14")
            forged_assertion = self._assertion(issued, forged, now, failure=None)
            old = select_one(response, "saml2:EncryptedAssertion")
            response.replace(old, self._encrypt(forged_assertion, failure=None))
        self._signer.sign(outer)
        return 200, m.soap_envelope(outer)

    def logout(self, envelope_xml: bytes) -> tuple[int, bytes]:
        """Answer a SOAP LogoutRequest with a signed LogoutResponse."""
        try:
            request = m.soap_body(parse(envelope_xml))
            if request.tag != m.q("saml2p", "LogoutRequest"):
                raise BadRequest("not a LogoutRequest")
            self._check_sp_message(request, self.settings.base_url + LOGOUT_PATH)
        except (BadRequest, XmlError) as exc:
            return 500, m.soap_fault(str(exc))
        response = _answer_root(
            "LogoutResponse",
            {
                "ID": m.new_id(),
                "InResponseTo": request.get("ID", ""),
                "IssueInstant": m.saml_time(dt.datetime.now(dt.UTC)),
                "Version": "2.0",
            },
        )
        etree.SubElement(response, m.q("saml2", "Issuer")).text = self.settings.entity_id
        code = STATUS_FAILURES.get(self.failure) if self.failure else None
        m.status(response, m.STATUS_PREFIX + (code or "Success"))
        self._signer.sign(response)
        return 200, m.soap_envelope(response)

    # -- building the answer -----------------------------------------------------

    def _response(
        self, outer: etree._Element, issued: _Issued, now: dt.datetime, failure: Failure | None
    ) -> etree._Element:
        response = etree.SubElement(
            outer,
            m.q("saml2p", "Response"),
            {
                "Destination": self.settings.sp_acs_url,
                "ID": m.new_id(),
                "InResponseTo": issued.login.request_id,
                "IssueInstant": m.saml_time(now),
                "Version": "2.0",
            },
        )
        etree.SubElement(response, m.q("saml2", "Issuer")).text = self.settings.entity_id
        m.status(response, issued.status)
        # Like the real node, a failed Response may carry an assertion too.
        person = issued.person or Person("", "", "", "")
        response.append(self._encrypt(self._assertion(issued, person, now, failure), failure))
        return response

    def _denial(self, outer: etree._Element, now: dt.datetime) -> etree._Element:
        """Append a Response denying an artifact the node cannot tie to any request."""
        response = etree.SubElement(
            outer,
            m.q("saml2p", "Response"),
            {
                "Destination": self.settings.sp_acs_url,
                "ID": m.new_id(),
                "IssueInstant": m.saml_time(now),
                "Version": "2.0",
            },
        )
        etree.SubElement(response, m.q("saml2", "Issuer")).text = self.settings.entity_id
        m.status(response, m.STATUS_PREFIX + "RequestDenied", "unknown artifact")
        return response

    def _assertion(
        self, issued: _Issued, person: Person, now: dt.datetime, failure: Failure | None
    ) -> bytes:
        settings = self.settings
        assertion_id = (
            _REPEATED_ASSERTION_ID if failure is Failure.REPEAT_ASSERTION_ID else m.new_id()
        )
        pseudonym = hashlib.sha256(f"{settings.sp_entity_id}|{person.pesel}".encode()).hexdigest()
        instant, later = m.saml_time(now), m.saml_time(now + dt.timedelta(minutes=5))
        identifier = (
            m.EIDAS_PL_PL + person.pesel
            if settings.person_identifier == "eidas" and person.pesel.isdigit()
            else person.pesel
        )
        values = (person.first_name, person.last_name, person.date_of_birth, identifier)
        # Written as text, far cheaper than building the tree node by node and
        # serialising it, to the same bytes; tests/wk/test_standin_answer.py logs in
        # a person whose names need escaping.
        xml = _ASSERTION_TEMPLATE.format(
            id=_attr(assertion_id),
            instant=instant,
            later=later,
            issuer=_text(settings.entity_id),
            name_id=pseudonym,
            request_id=_attr(issued.login.request_id),
            acs=_attr(settings.sp_acs_url),
            audience_restriction=self._audience_restriction(failure),
            session_index=f"_{hashlib.sha1(assertion_id.encode()).hexdigest()}",  # noqa: S324
            loa=_text(issued.login.loa_uri),
            attributes="".join(
                _ATTRIBUTE_TEMPLATE.format(name=name, value=_text(value))
                for name, value in zip(m.ATTRIBUTES, values, strict=True)
            ),
        ).encode()
        if failure is not Failure.COMMENT_IN_NAMEID and not settings.sign_assertion:
            return xml
        assertion = etree.fromstring(xml)
        for element in assertion.iter(*_TEXT_TAGS):
            # An empty value parses as no text, which lxml would write as <x/>.
            element.text = element.text or ""
        if failure is Failure.COMMENT_IN_NAMEID:
            name_id = assertion[1][0]
            name_id.text = pseudonym[:8]
            comment = etree.Comment("split")
            comment.tail = pseudonym[8:]
            name_id.append(comment)
        if settings.sign_assertion:
            # No InclusiveNamespaces here: the assertion is signed on its own and then
            # read inside the Response, where more prefixes are in scope.
            self._signer.sign(assertion, inclusive_prefixes=None)
        return etree.tostring(assertion, encoding="UTF-8")

    def _audience_restriction(self, failure: Failure | None) -> str:
        if failure is Failure.NO_AUDIENCE:
            return ""
        audience = (
            OTHER_AUDIENCE if failure is Failure.OTHER_AUDIENCE else self.settings.sp_entity_id
        )
        return _AUDIENCE_TEMPLATE.format(audience=_text(audience))

    def _encrypt(self, assertion_xml: bytes, failure: Failure | None) -> etree._Element:
        return encrypt_assertion(
            assertion_xml,
            self._sp_encryption_key,
            party_u=self.settings.entity_id,
            party_v=self.settings.sp_entity_id,
            content_key_bits=128 if failure is Failure.KEY_128 else 256,
        )

    # -- helpers -----------------------------------------------------------------

    def _check_sp_message(self, message: etree._Element, destination: str) -> None:
        try:
            self._sp.verify(message)
        except SignatureError as exc:
            raise BadRequest(f"the service's signature: {exc}") from None
        if m.text_of(select_one(message, "saml2:Issuer")) != self.settings.sp_entity_id:
            raise BadRequest("the issuer is not the registered service")
        if message.get("Destination") not in (None, destination):
            raise BadRequest(f"Destination is not {destination}")
        issued = m.parse_time(message.get("IssueInstant"))
        now = dt.datetime.now(dt.UTC)
        if abs((now - issued).total_seconds()) > 300:
            raise BadRequest("the request is too old or from the future")

    def _purge(self) -> None:
        now = time.monotonic()
        self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
        self._artifacts = {k: v for k, v in self._artifacts.items() if v.expires > now}
