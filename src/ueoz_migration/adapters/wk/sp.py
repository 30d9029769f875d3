"""The service provider side of login through Węzeł Krajowy.

One login: `authn_request()` gives the form the browser posts to the node; the node
sends the browser back to the ACS with an artifact; `resolve()` turns that artifact,
over the SOAP back channel, into the person's `Identity` or raises `LoginFailed`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import enum
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from onelogin.saml2.errors import OneLogin_Saml2_ValidationError as SamlError
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.pl import pesel as pesel_number

from ...domain.identity import FAMILY_NAME_MAX, GIVEN_NAMES_MAX, PESEL_LENGTH
from ...domain.text import forbidden_characters
from . import messages as m
from .ecdh import DecryptionError, decrypt_assertion
from .settings import WkSettings
from .validation import ResponseValidator
from .xmlsig import (
    DS_SIGNATURE,
    SignatureError,
    Signer,
    Verifier,
    XmlError,
    has_signature,
    parse,
    select,
    select_one,
)


class FailureReason(enum.StrEnum):
    """Why a login through the node ended without an identity."""

    AUTHN_FAILED = "authn_failed"  # the person cancelled or did not authenticate
    REQUEST_DENIED = "request_denied"  # the node refused (also: unknown or used artifact)
    UNKNOWN_PRINCIPAL = "unknown_principal"  # the node does not know the person
    REQUESTER = "requester"  # the node found our request wrong
    NODE_ERROR = "node_error"  # any other status, or a SOAP fault
    NODE_UNREACHABLE = "node_unreachable"  # timeout, connection or HTTP error
    BAD_SIGNATURE = "bad_signature"
    MISMATCH = "mismatch"  # not for us: InResponseTo, issuer, audience, destination
    EXPIRED = "expired"
    REPLAY = "replay"  # artifact or assertion seen before
    UNDECRYPTABLE = "undecryptable"
    INSUFFICIENT_LOA = "insufficient_loa"
    MISSING_ATTRIBUTE = "missing_attribute"
    INVALID_ATTRIBUTE = "invalid_attribute"  # too long for the tables, or a forbidden character
    INVALID_PESEL = "invalid_pesel"
    MALFORMED = "malformed"
    LOGOUT_FAILED = "logout_failed"


#: The most the back channel reads of one reply: the node's answers weigh ~10 kB.
MAX_SOAP_REPLY_BYTES = 1024 * 1024

# An eIDAS person identifier: two-letter issuing and receiving countries, then the number.
_EIDAS_IDENTIFIER = re.compile(r"[A-Z]{2}/[A-Z]{2}/")

#: The most characters of each value the node gives that the service takes: its columns'
#: sizes for the person's names, a date for the date of birth; a PESEL, which is then
#: checked and kept as its 11 digits, with room for the spaces or hyphens stdnum allows in
#: it; the node's identifiers of the login (kept in the session for the logout) at 256.
ATTRIBUTE_LIMITS = {
    "CurrentGivenName": GIVEN_NAMES_MAX,
    "CurrentFamilyName": FAMILY_NAME_MAX,
    "DateOfBirth": len("YYYY-MM-DD"),
    "PersonIdentifier": 2 * PESEL_LENGTH,
    "NameID": 256,
    "SessionIndex": 256,
}

_STATUS_REASONS = {
    m.STATUS_PREFIX + "AuthnFailed": FailureReason.AUTHN_FAILED,
    m.STATUS_PREFIX + "RequestDenied": FailureReason.REQUEST_DENIED,
    m.STATUS_PREFIX + "UnknownPrincipal": FailureReason.UNKNOWN_PRINCIPAL,
    m.STATUS_PREFIX + "Requester": FailureReason.REQUESTER,
}

_SAML_ERROR_REASONS = {
    **dict.fromkeys(
        (
            SamlError.INVALID_SIGNATURE,
            SamlError.NO_SIGNATURE_FOUND,
            SamlError.NO_SIGNED_MESSAGE,
            SamlError.WRONG_SIGNED_ELEMENT,
            SamlError.INVALID_SIGNED_ELEMENT,
            SamlError.UNEXPECTED_SIGNED_ELEMENTS,
            SamlError.ID_NOT_FOUND_IN_SIGNED_ELEMENT,
            SamlError.DUPLICATED_ID_IN_SIGNED_ELEMENTS,
            SamlError.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS,
            SamlError.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE,
            SamlError.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION,
            SamlError.DEPRECATED_SIGNATURE_METHOD,
            SamlError.DEPRECATED_DIGEST_METHOD,
        ),
        FailureReason.BAD_SIGNATURE,
    ),
    **dict.fromkeys(
        (
            SamlError.ASSERTION_EXPIRED,
            SamlError.ASSERTION_TOO_EARLY,
            SamlError.SESSION_EXPIRED,
            SamlError.RESPONSE_EXPIRED,
        ),
        FailureReason.EXPIRED,
    ),
    **dict.fromkeys(
        (
            SamlError.WRONG_INRESPONSETO,
            SamlError.WRONG_DESTINATION,
            SamlError.EMPTY_DESTINATION,
            SamlError.WRONG_AUDIENCE,
            SamlError.WRONG_ISSUER,
            SamlError.ISSUER_MULTIPLE_IN_RESPONSE,
            SamlError.ISSUER_NOT_FOUND_IN_ASSERTION,
            SamlError.WRONG_SUBJECTCONFIRMATION,
        ),
        FailureReason.MISMATCH,
    ),
}


class LoginFailed(Exception):
    """A login or logout through the node failed; `reason` says why, for the user."""

    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        # For logs and the helpdesk; never shown to the user. The caller logs it as it is,
        # so it names what was wrong and does not quote the person's attributes.
        self.detail = detail


class ReplayStore(Protocol):
    """Remembers artifacts and assertion IDs until they expire."""

    def first_use(self, kind: str, key: str, expires_at: dt.datetime) -> bool:
        """Record `key` of `kind`; True the first time, False ever after (until expiry)."""
        ...


class MemoryReplayStore:
    """A ReplayStore for one process (tests, the embedded default)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], dt.datetime] = {}
        self._lock = threading.Lock()

    def first_use(self, kind: str, key: str, expires_at: dt.datetime) -> bool:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            seen_until = self._seen.get((kind, key))
            if seen_until is not None and seen_until > now:
                return False
            self._seen[(kind, key)] = expires_at
            return True


@dataclass(frozen=True)
class AuthnRequestForm:
    """What the browser must post to the node to start a login."""

    action: str
    saml_request: str
    relay_state: str
    request_id: str
    issued_at: dt.datetime


@dataclass(frozen=True)
class Identity:
    """The person the node vouches for."""

    given_names: str
    family_name: str
    date_of_birth: dt.date
    pesel: str
    name_id: str
    session_index: str
    loa: str


StepTimer = Callable[[str, float], None]


class ServiceProvider:
    """Talks to the node on the service's behalf; one per process, thread-safe."""

    def __init__(
        self,
        settings: WkSettings,
        replay_store: ReplayStore,
        http_client: httpx.Client | None = None,
        *,
        step_timer: StepTimer | None = None,
        step_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self._replay = replay_store
        self._http = http_client or httpx.Client(verify=settings.tls_verify)
        self._signer = Signer(settings.sp_signing.key_pem, settings.sp_signing.cert_pem)
        self._node = Verifier(settings.node_cert_pem)
        key = serialization.load_pem_private_key(settings.sp_encryption.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the encryption key must be EC P-256")
        self._decryption_key = key
        self._validator = ResponseValidator(settings)
        self._step_timer = step_timer
        self._step_clock = step_clock

    # -- login -------------------------------------------------------------------

    def authn_request(self, relay_state: str, *, loa_uri: str | None = None) -> AuthnRequestForm:
        """Build the signed AuthnRequest and the form that carries it to the node.

        ``loa_uri``: a level of assurance a domain system asked for; the node is asked for it
        when it is higher than the configured one (``WK_LOA``), never for less.
        """
        if len(relay_state.encode()) > 80:
            raise ValueError("RelayState must not exceed 80 bytes (SAML bindings, 3.4.3)")
        request_id = m.new_id()
        issued_at = self._now()
        level = self.settings.loa_uri
        if loa_uri is not None and m.LOA_ORDER.get(loa_uri, -1) > m.LOA_ORDER[level]:
            level = loa_uri
        request = m.authn_request(
            request_id=request_id,
            issued_at=issued_at,
            issuer=self.settings.sp_entity_id,
            destination=self.settings.sso_url,
            acs_url=self.settings.acs_url,
            loa_uri=level,
        )
        self._signer.sign(request)
        return AuthnRequestForm(
            action=self.settings.sso_url,
            saml_request=base64.b64encode(etree.tostring(request, encoding="UTF-8")).decode(),
            relay_state=relay_state,
            request_id=request_id,
            issued_at=issued_at,
        )

    def resolve(self, saml_art: str, pending_request_id: str) -> Identity:
        """Resolve the artifact the browser brought back into the person's identity.

        Raise `LoginFailed` when there is none; its reason and detail are for the caller
        to log, once, with the rest of what it knows of the login.
        """
        try:
            return self._resolve(saml_art, pending_request_id)
        except (XmlError, etree.LxmlError) as exc:
            raise LoginFailed(FailureReason.MALFORMED, str(exc)) from None

    def _resolve(self, saml_art: str, pending_request_id: str) -> Identity:
        # Each `_step` is timed under its name when a step timer is given (the login
        # benchmark's table); a step that fails is timed up to its failure.
        now = self._now()
        self._check_artifact(saml_art, now)
        resolve_id = m.new_id()
        request = self._signed_artifact_resolve(saml_art, resolve_id, now)
        with self._step("resolve_soap"):
            envelope = self._soap(self.settings.artifact_resolution_url, request)
        with self._step("verify_signatures"):
            response = self._verified_response(envelope, resolve_id, pending_request_id, now)
        with self._step("decrypt"):
            assertion = self._decrypted_assertion(response)
        with self._step("saml_validation"):
            self._validate(response, assertion, pending_request_id, now)
            self._check_audience(assertion)
        with self._step("identity"):
            identity = self._identity(assertion)
            self._check_assertion_replay(assertion, now)
        return identity

    def _check_artifact(self, saml_art: str, now: dt.datetime) -> None:
        """Refuse an artifact another node issued, or one resolved before; remember it."""
        artifact = m.Artifact.decode(saml_art)
        if artifact.source_id != m.Artifact.source_id_for(self.settings.node_entity_id):
            raise LoginFailed(
                FailureReason.MISMATCH,
                f"artifact issued by another node; {self.settings.node_entity_id_said}",
            )
        # Keyed by the artifact's bytes, not its text: the same artifact with a trailing
        # newline, or other padding bits, is the same artifact.
        if not self._replay.first_use("artifact", artifact.encode(), now + self._lifetime):
            raise LoginFailed(FailureReason.REPLAY, "artifact already resolved")

    def _signed_artifact_resolve(
        self, saml_art: str, resolve_id: str, now: dt.datetime
    ) -> etree._Element:
        """Build and sign the ArtifactResolve that asks the node for the artifact's answer."""
        request = m.artifact_resolve(
            message_id=resolve_id,
            issued_at=now,
            issuer=self.settings.sp_entity_id,
            destination=self.settings.artifact_resolution_url,
            artifact=saml_art,
        )
        self._signer.sign(request)
        return request

    def _verified_response(
        self,
        envelope: etree._Element,
        resolve_id: str,
        pending_request_id: str,
        now: dt.datetime,
    ) -> etree._Element:
        """Check the node's ArtifactResponse and the one Response in it; return the Response."""
        artifact_response = m.soap_body(envelope)
        if artifact_response.tag != m.q("saml2p", "ArtifactResponse"):
            raise LoginFailed(FailureReason.MALFORMED, "not an ArtifactResponse")
        # A plaintext assertion has no business anywhere in this message.
        if next(envelope.iter(m.q("saml2", "Assertion")), None) is not None:
            raise LoginFailed(FailureReason.MALFORMED, "unencrypted assertion in the message")
        self._check_signed_message(artifact_response, resolve_id, now)
        outer_codes = m.status_codes(artifact_response)
        responses = select(artifact_response, "saml2p:Response")
        if len(responses) > 1:
            raise LoginFailed(FailureReason.MALFORMED, "more than one Response")
        if not responses:
            if outer_codes[0] != m.STATUS_SUCCESS:
                raise self._status_failure(outer_codes)
            raise LoginFailed(FailureReason.MALFORMED, "ArtifactResponse without a Response")
        response = responses[0]
        self._check_node_signed(response)
        # The status before InResponseTo: a node that denies an artifact it does not know
        # (or no longer knows) denies it in a Response that answers none of our requests.
        codes = m.status_codes(response)
        if codes[0] != m.STATUS_SUCCESS:
            # A failed Response may still carry an EncryptedAssertion: never used.
            raise self._status_failure(codes)
        self._check_answer(response, pending_request_id, now)
        if outer_codes[0] != m.STATUS_SUCCESS:
            raise self._status_failure(outer_codes)
        return response

    def _decrypted_assertion(self, response: etree._Element) -> etree._Element:
        """Decrypt the Response's one EncryptedAssertion; verify its signature, if it has one."""
        encrypted = select(response, "saml2:EncryptedAssertion")
        if len(encrypted) != 1:
            raise LoginFailed(FailureReason.MALFORMED, "expected one EncryptedAssertion")
        try:
            plaintext = decrypt_assertion(encrypted[0], self._decryption_key)
        except DecryptionError as exc:
            raise LoginFailed(FailureReason.UNDECRYPTABLE, str(exc)) from None
        assertion = parse(plaintext)
        if assertion.tag != m.q("saml2", "Assertion"):
            raise LoginFailed(FailureReason.MALFORMED, "the encrypted element is no Assertion")
        if has_signature(assertion):
            self._verify(assertion)
        return assertion

    def _validate(
        self,
        response: etree._Element,
        assertion: etree._Element,
        pending_request_id: str,
        now: dt.datetime,
    ) -> None:
        """Have python3-saml validate the Response, and a copy with `assertion` decrypted in it."""
        # python3-saml gets a tree of the Response alone (it queries from
        # /samlp:Response): a deep copy, which lxml makes with every namespace in
        # scope at the Response, so the signed bytes stay the same and nothing
        # is serialised and parsed again.
        document = copy.deepcopy(response)
        decrypted_document = copy.deepcopy(document)
        decrypted_document.replace(
            select_one(decrypted_document, "saml2:EncryptedAssertion"), assertion
        )
        try:
            self._validator.validate(
                document,
                decrypted_document,
                pending_request_id,
                # The copy's signature is the one _check_signed_message verified (in
                # _verified_response), with the node's key, on the Response the copy was
                # made of.
                verified_signature=next(child for child in document if child.tag == DS_SIGNATURE),
            )
        except SamlError as exc:
            raise LoginFailed(self._saml_reason(exc, assertion, now), str(exc)) from None
        except Exception as exc:  # python3-saml raises bare Exceptions too
            raise LoginFailed(FailureReason.MALFORMED, f"python3-saml: {exc}") from None

    def _check_audience(self, assertion: etree._Element) -> None:
        """Refuse an assertion that is not restricted to this service.

        python3-saml compares the audiences only when the assertion names some; one with no
        AudienceRestriction would pass it. The Web Browser SSO profile (SAML 2.0 Profiles,
        4.1.4.2) requires an audience naming the service provider, and the node sends one.
        """
        audiences = select(assertion, "saml2:Conditions/saml2:AudienceRestriction/saml2:Audience")
        if self.settings.sp_entity_id not in (m.text_of(audience) for audience in audiences):
            raise LoginFailed(FailureReason.MISMATCH, "assertion not restricted to this service")

    def _check_assertion_replay(self, assertion: etree._Element, now: dt.datetime) -> None:
        """Refuse an assertion used before; remember this one until it expires."""
        not_after = select_one(assertion, "saml2:Conditions")
        expires = (
            m.parse_time(not_after.get("NotOnOrAfter"))
            if not_after is not None and not_after.get("NotOnOrAfter")
            else now + self._lifetime
        )
        assertion_id = assertion.get("ID") or ""
        if not assertion_id or not self._replay.first_use(
            "assertion", assertion_id, expires + self._skew
        ):
            raise LoginFailed(FailureReason.REPLAY, "assertion already used")

    # -- logout ------------------------------------------------------------------

    def logout_request(self, name_id: str, session_index: str) -> None:
        """End the person's session at the node over SOAP; raise LoginFailed if refused."""
        try:
            self._logout(name_id, session_index)
        except (XmlError, etree.LxmlError) as exc:
            raise LoginFailed(FailureReason.MALFORMED, str(exc)) from None

    def _logout(self, name_id: str, session_index: str) -> None:
        now = self._now()
        request_id = m.new_id()
        request = m.logout_request(
            message_id=request_id,
            issued_at=now,
            issuer=self.settings.sp_entity_id,
            destination=self.settings.logout_url,
            name_id=name_id,
            session_index=session_index,
        )
        self._signer.sign(request)
        envelope = self._soap(self.settings.logout_url, request)
        response = m.soap_body(envelope)
        if response.tag != m.q("saml2p", "LogoutResponse"):
            raise LoginFailed(FailureReason.MALFORMED, "not a LogoutResponse")
        self._check_signed_message(response, request_id, now)
        codes = m.status_codes(response)
        if codes[0] != m.STATUS_SUCCESS:
            raise LoginFailed(FailureReason.LOGOUT_FAILED, " ".join(codes))

    # -- metadata ----------------------------------------------------------------

    def metadata_xml(self) -> str:
        """Return the service's signed SAML metadata, for the node's operator."""
        metadata = m.sp_metadata(
            entity_id=self.settings.sp_entity_id,
            acs_url=self.settings.acs_url,
            slo_url=self.settings.slo_url,
            signing_cert_pem=self.settings.sp_signing.cert_pem,
            encryption_cert_pem=self.settings.sp_encryption.cert_pem,
        )
        metadata.set("ID", m.new_id())
        self._signer.sign(metadata)
        return etree.tostring(metadata, encoding="unicode")

    def close(self) -> None:
        """Close the back-channel connection pool."""
        self._http.close()

    # -- helpers -----------------------------------------------------------------

    @property
    def _lifetime(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.message_lifetime_seconds)

    @property
    def _skew(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.clock_skew_seconds)

    @staticmethod
    def _now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    @contextmanager
    def _step(self, name: str):
        if self._step_timer is None:
            yield
            return
        started = self._step_clock()
        try:
            yield
        finally:
            self._step_timer(name, self._step_clock() - started)

    def _soap(self, url: str, message: etree._Element) -> etree._Element:
        status, content = self._post(url, m.soap_envelope(message))
        if status == 200:
            return parse(content)
        # SOAP 1.1 sends faults with HTTP 500; anything else is a broken node.
        try:
            envelope = parse(content)
            fault = m.soap_body(envelope)
        except XmlError:
            fault = None
        if fault is not None and fault.tag == m.q("soap", "Fault"):
            raise LoginFailed(
                FailureReason.NODE_ERROR, f"SOAP fault: {m.text_of(fault.find('faultstring'))}"
            )
        raise LoginFailed(FailureReason.NODE_UNREACHABLE, f"{url}: HTTP {status}")

    def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """POST to the node's back channel; return the status and the body, within bounds.

        httpx's timeout bounds each wait for the network, not the whole exchange: a reply
        trickling in a byte at a time would hold the login (and a web worker) for minutes,
        and a huge one would be read into memory whole. The reply is read in pieces, against
        a deadline for the whole exchange and a cap on its size.
        """
        timeout = self.settings.timeout_seconds
        deadline = time.monotonic() + timeout
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        try:
            with self._http.stream(
                "POST", url, content=body, headers=headers, timeout=timeout
            ) as reply:
                pieces, size = [], 0
                for piece in reply.iter_bytes():
                    size += len(piece)
                    if size > MAX_SOAP_REPLY_BYTES:
                        raise LoginFailed(
                            FailureReason.MALFORMED,
                            f"{url}: the reply is over {MAX_SOAP_REPLY_BYTES} bytes",
                        )
                    if time.monotonic() > deadline:
                        raise LoginFailed(
                            FailureReason.NODE_UNREACHABLE,
                            f"{url}: no whole reply within {timeout} s",
                        )
                    pieces.append(piece)
                return reply.status_code, b"".join(pieces)
        except httpx.HTTPError as exc:
            raise LoginFailed(FailureReason.NODE_UNREACHABLE, f"{url}: {exc!r}") from None

    def _verify(self, element: etree._Element) -> None:
        try:
            self._node.verify(element)
        except SignatureError as exc:
            raise LoginFailed(FailureReason.BAD_SIGNATURE, str(exc)) from None

    def _check_signed_message(
        self, message: etree._Element, in_response_to: str, now: dt.datetime
    ) -> None:
        """Verify a node message's own signature, issuer, InResponseTo and age."""
        self._check_node_signed(message)
        self._check_answer(message, in_response_to, now)

    def _check_node_signed(self, message: etree._Element) -> None:
        """Verify that the node signed and issued this SAML 2.0 message."""
        self._verify(message)
        if message.get("Version") != "2.0":
            raise LoginFailed(FailureReason.MALFORMED, "not SAML 2.0")
        issuer = m.text_of(select_one(message, "saml2:Issuer"))
        if issuer != self.settings.node_entity_id:
            raise LoginFailed(
                FailureReason.MISMATCH, f"issuer {issuer!r}; {self.settings.node_entity_id_said}"
            )

    def _check_answer(self, message: etree._Element, in_response_to: str, now: dt.datetime) -> None:
        """Verify that a node message answers our request ``in_response_to``, and is recent."""
        if message.get("InResponseTo") != in_response_to:
            raise LoginFailed(FailureReason.MISMATCH, "InResponseTo is not our request")
        issued = m.parse_time(message.get("IssueInstant"))
        if not now - self._lifetime - self._skew <= issued <= now + self._skew:
            raise LoginFailed(FailureReason.EXPIRED, f"issued {issued.isoformat()}")

    @staticmethod
    def _status_failure(codes: list[str]) -> LoginFailed:
        for code in reversed(codes):
            if code in _STATUS_REASONS:
                return LoginFailed(_STATUS_REASONS[code], " ".join(codes))
        return LoginFailed(FailureReason.NODE_ERROR, " ".join(codes))

    def _saml_reason(
        self, error: SamlError, assertion: etree._Element, now: dt.datetime
    ) -> FailureReason:
        if error.code == SamlError.WRONG_SUBJECTCONFIRMATION:
            # python3-saml says the same for a stale confirmation as for a wrong one.
            data = select_one(
                assertion, "saml2:Subject/saml2:SubjectConfirmation/saml2:SubjectConfirmationData"
            )
            not_after = data.get("NotOnOrAfter") if data is not None else None
            if not_after and m.parse_time(not_after) <= now:
                return FailureReason.EXPIRED
        return _SAML_ERROR_REASONS.get(error.code, FailureReason.MALFORMED)

    def _identity(self, assertion: etree._Element) -> Identity:
        values: dict[str, str] = {}
        for attribute in select(assertion, "saml2:AttributeStatement/saml2:Attribute"):
            name = attribute.get("Name", "")
            if not name.startswith(m.NATURAL_PERSON):
                continue
            found = select(attribute, "saml2:AttributeValue")
            if len(found) != 1:
                raise LoginFailed(FailureReason.MALFORMED, f"{name} must have one value")
            values[name.removeprefix(m.NATURAL_PERSON)] = m.text_of(found[0])
        missing = [name for name in m.ATTRIBUTES if not values.get(name)]
        if missing:
            raise LoginFailed(FailureReason.MISSING_ATTRIBUTE, ", ".join(missing))
        name_id = m.text_of(select_one(assertion, "saml2:Subject/saml2:NameID"))
        statement = select_one(assertion, "saml2:AuthnStatement")
        session_index = statement.get("SessionIndex", "") if statement is not None else ""
        if not name_id or not session_index:
            raise LoginFailed(FailureReason.MALFORMED, "NameID and SessionIndex are needed")
        _check_values({**values, "NameID": name_id, "SessionIndex": session_index})
        try:
            born = dt.date.fromisoformat(values["DateOfBirth"])
        except ValueError:
            raise LoginFailed(
                FailureReason.INVALID_ATTRIBUTE, "DateOfBirth is not a date"
            ) from None
        identifier = values["PersonIdentifier"]
        # eIDAS writes a person identifier as issuing country/receiving country/number; the
        # node sends a PESEL so (PL/PL/…) or bare, and both are taken. Another country's
        # identifier is no PESEL.
        if _EIDAS_IDENTIFIER.match(identifier) and not identifier.startswith(m.EIDAS_PL_PL):
            raise LoginFailed(
                FailureReason.INVALID_PESEL,
                f"PersonIdentifier not {m.EIDAS_PL_PL}: another country's",
            )
        try:
            pesel = pesel_number.validate(identifier.removeprefix(m.EIDAS_PL_PL))
        except StdnumError:
            raise LoginFailed(FailureReason.INVALID_PESEL, "PersonIdentifier") from None

        loa = m.text_of(
            select_one(
                assertion, "saml2:AuthnStatement/saml2:AuthnContext/saml2:AuthnContextClassRef"
            )
        )
        if m.LOA_ORDER.get(loa, -1) < m.LOA_ORDER[self.settings.loa_uri]:
            raise LoginFailed(FailureReason.INSUFFICIENT_LOA, loa or "no LoA")
        return Identity(
            given_names=values["CurrentGivenName"],
            family_name=values["CurrentFamilyName"],
            date_of_birth=born,
            pesel=pesel,
            name_id=name_id,
            session_index=session_index,
            loa=loa,
        )


def _check_values(values: dict[str, str]) -> None:
    """Refuse a value the tables could not hold, or one holding a character no name may.

    Before anything is stored: PostgreSQL would refuse a name over its column's size with an
    error (SQLite would keep it), and a NUL outright. The detail names the attribute and
    what is wrong, never the value.
    """
    for name, limit in ATTRIBUTE_LIMITS.items():
        value = values.get(name, "")
        if len(value) > limit:
            raise LoginFailed(
                FailureReason.INVALID_ATTRIBUTE, f"{name} longer than {limit} characters"
            )
        reason = forbidden_characters(value)
        if reason:
            raise LoginFailed(FailureReason.INVALID_ATTRIBUTE, f"{name} {reason}")
