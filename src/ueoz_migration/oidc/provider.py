"""UEOZ as the domain systems' OpenID Provider: what the web layer asks of it.

docs/integration.md is the domain systems' side of it; docs/architecture.md ("Signing in to
the domain systems") shows where it sits in the journey. In short: an authorization request
is answered at once when the browser's SSO session holds a migrated person who meets it
(``prompt``, ``max_age``, ``acr_values``); otherwise it waits (``authorizations.py``) while
the person logs in at the node and, if need be, migrates, and is completed from the
journey's last screen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oidc.core.errors import InteractionRequiredError, LoginRequiredError
from flask import Response
from flask import request as flask_request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import transaction
from ..db.models import BackchannelLogout, OidcClient, SsoSession, SsoSessionClient
from .authorizations import Authorizations, Waiting
from .claims import LEVELS, SignedIn, asked_level, rank, subject
from .clients import Client, ClientRegistry
from .codes import Codes
from .keys import ALGORITHMS
from .server import (
    AUTHORIZE_PATH,
    END_SESSION_PATH,
    JWKS_PATH,
    MAX_AGE,
    TOKEN_PATH,
    USERINFO_PATH,
    OidcServer,
)
from .sso import SsoSessions

log = structlog.get_logger(__name__)

SUPPORTED_SCOPES = ("openid", "profile", "email", "roles", "pesel")
ID_TOKEN_CLAIMS = ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "sid")
PERSON_CLAIMS = ("name", "given_name", "family_name", "email", "email_verified", "roles", "pesel")
LANGUAGES = ("pl", "en")


class Refused(Exception):
    """A request the provider answers with a page of its own, never a redirect.

    ``reason``: ``client`` (not registered), ``redirect_uri`` (not registered for it) or
    ``request`` (anything else with no address safe to send the answer to).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answered:
    """The domain system's answer, sent now: a redirect with a code or an error."""

    response: Response
    client_id: str
    outcome: str  # code | the error's name


@dataclass(frozen=True)
class LogInFirst:
    """The request waits for the person to log in at the node (and maybe migrate)."""

    authorization_id: str
    client: Client
    level: str | None  # the node's level of assurance the domain system asked for
    language: str | None  # from ui_locales, when it names one of the pages' languages


@dataclass(frozen=True)
class Ended:
    """An SSO session just ended: what the node's logout needs, and who was told."""

    sid: str
    name_id: str
    session_index: str
    notified: tuple[str, ...]  # the domain systems a logout token goes to


class Provider:
    """Authorization, tokens, userinfo, discovery and logout for the domain systems."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        issuer: str,
        registry: ClientRegistry,
        sso: SsoSessions,
        authorizations: Authorizations,
        codes: Codes,
        server: OidcServer,
        subject_key: bytes,
    ) -> None:
        self.sessions = sessions
        self.issuer = issuer
        self.registry = registry
        self.sso = sso
        self.authorizations = authorizations
        self.codes = codes
        self.server = server
        self.subject_key = subject_key

    # -- authorization ---------------------------------------------------------------------

    def authorize(self, sso_id: str | None) -> Answered | LogInFirst:
        """Answer the authorization request being served, or keep it for after the login.

        Raise :class:`Refused` when the request cannot be answered at the domain system.
        """
        request = self.server.create_oauth2_request(None)
        params = request.payload.data
        person = self.sso.signed_in(sso_id)
        ready = person if person is not None and _meets(person, params) else None
        try:
            # With prompt=none and no one ready, Authlib refuses it (login_required).
            grant = self.server.get_consent_grant(request=request, end_user=ready)
        except LoginRequiredError as error:
            if person is None and self.sso.live(sso_id) is not None:
                # Logged in at UEOZ but not migrated yet: that takes the person's screens.
                error = InteractionRequiredError(
                    redirect_uri=error.redirect_uri, state=request.payload.state
                )
            return self._error(request, error)
        except OAuth2Error as error:
            error.state = request.payload.state
            return self._error(request, error)
        client: Client = grant.client
        if ready is not None:
            return self._answer_with(grant, grant.redirect_uri, ready, how="sso")
        query = urlencode(list(params.items()))
        authorization_id = self.authorizations.keep(client.id, query)
        language = next(
            (tag[:2] for tag in (params.get("ui_locales") or "").split() if tag[:2] in LANGUAGES),
            None,
        )
        log.info("oidc.waiting_for_login", client=client.id)
        return LogInFirst(authorization_id, client, asked_level(params.get("acr_values")), language)

    def complete(self, waiting: Waiting, person: SignedIn | None) -> Answered:
        """Answer a request that waited: a code for ``person``, or ``access_denied`` (None).

        The request is checked again: its domain system and address must still be
        registered (a request kept across a change of configuration is no open redirect).
        """
        request = self.server.stored_request(waiting.query)
        try:
            grant = self.server.get_authorization_grant(request)
            redirect_uri = grant.validate_authorization_request()
        except OAuth2Error as error:
            error.state = request.payload.state
            return self._error(request, error)
        return self._answer_with(grant, redirect_uri, person, how="login")

    def client_of(self, waiting: Waiting | None) -> Client | None:
        return self.registry.get(waiting.client_id) if waiting is not None else None

    def _answer_with(
        self, grant: Any, redirect_uri: str, person: SignedIn | None, *, how: str
    ) -> Answered:
        """The answer to a request already checked: a code for ``person``, else access_denied.

        Authlib's ``create_authorization_response`` would check the request once more.
        """
        try:
            response = self.server.handle_response(
                *grant.create_authorization_response(redirect_uri, person)
            )
        except OAuth2Error as error:  # access_denied: no one signed in (person is None)
            error.state = grant.request.payload.state
            return self._error(grant.request, error)
        assert person is not None
        log.info("oidc.code_issued", client=grant.client.id, via=how, sid=person.sid)
        return self._answer(response, grant.client.id, "code")

    def _error(self, request: OAuth2Request, error: OAuth2Error) -> Answered:
        client_id = request.payload.client_id
        log.info(
            "oidc.authorization_refused",
            client=client_id if isinstance(client_id, str) else None,
            error=error.error,
            reason=error.description,
        )
        if not error.redirect_uri:
            reason = (
                "client"
                if error.error == "invalid_client"
                else "redirect_uri"
                if "redirect" in (error.description or "").lower()
                else "request"
            )
            raise Refused(reason)
        response = self.server.handle_error_response(request, error)
        return self._answer(response, client_id, error.error)

    def _answer(self, response: Response, client_id: str, outcome: str) -> Answered:
        # RFC 9207: the answer names its issuer, so a domain system talking to several
        # providers can tell whose answer it is (a mix-up attack).
        location = response.headers.get("Location")
        if location:
            response.headers["Location"] = add_params_to_uri(location, {"iss": self.issuer})
        return Answered(response, client_id, outcome)

    # -- tokens, userinfo, discovery -------------------------------------------------------

    def token_response(self) -> Response:
        response = self.server.create_token_response()
        if response.status_code != 200:
            body = response.get_json(silent=True) or {}
            log.info(
                "oidc.token_refused",
                error=body.get("error"),
                reason=body.get("error_description"),
                client=_client_named(flask_request),
            )
        return response

    def userinfo_response(self) -> Response:
        response = self.server.create_endpoint_response("userinfo")
        if response.status_code != 200:
            log.info("oidc.userinfo_refused", status=response.status_code)
        return response

    def metadata(self) -> dict[str, Any]:
        """The provider's configuration (OpenID Connect Discovery 1.0, section 3)."""
        issuer = self.issuer
        return {
            "issuer": issuer,
            "authorization_endpoint": issuer + AUTHORIZE_PATH,
            "token_endpoint": issuer + TOKEN_PATH,
            "userinfo_endpoint": issuer + USERINFO_PATH,
            "jwks_uri": issuer + JWKS_PATH,
            "end_session_endpoint": issuer + END_SESSION_PATH,
            "scopes_supported": list(SUPPORTED_SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["pairwise", "public"],
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": [
                "ES256",
                "ES384",
                "RS256",
                "PS256",
                "EdDSA",
            ],
            "code_challenge_methods_supported": ["S256"],
            "acr_values_supported": list(LEVELS),
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "claims_supported": [*ID_TOKEN_CLAIMS, *PERSON_CLAIMS],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "ui_locales_supported": list(LANGUAGES),
        }

    # -- logout ----------------------------------------------------------------------------

    def end_session_request(self) -> Any:
        """The RP-initiated logout request being served, checked (raises OAuth2Error)."""
        return self.server.validate_endpoint_request("end_session")

    def end_session(self, sso_id: str, *, initiator: str | None = None) -> Ended | None:
        """End an SSO session: revoke its tokens and tell its other domain systems.

        One transaction: the session ends, and a logout row is written for each domain system
        it signed in to (but ``initiator``, which asked for the logout) that takes them. None
        when it had ended already. The node's session is the caller's to end (SOAP).
        """
        now = datetime.now(UTC)
        with transaction(self.sessions) as session:
            row = session.scalars(
                select(SsoSession).where(SsoSession.id == sso_id).with_for_update()
            ).one_or_none()
            if row is None or row.ended_at is not None:
                return None
            row.ended_at = now
            self.codes.revoke_session(session, sso_id, now)
            notified = []
            signed_in = session.scalars(
                select(SsoSessionClient).where(SsoSessionClient.sso_session_id == sso_id)
            ).all()
            for entry in signed_in:
                found = session.get(OidcClient, entry.client_id)
                client = Client.from_row(found) if found is not None else None
                if client is None or client.id == initiator or not client.backchannel_logout_uri:
                    continue
                session.add(
                    BackchannelLogout(
                        client_id=client.id,
                        sid=row.sid,
                        subject=subject(self.subject_key, client, entry.account_id),
                        created_at=now,
                        due_at=now,
                        tries=0,
                        last_error="",
                    )
                )
                notified.append(client.id)
        log.info("oidc.session_ended", sid=row.sid, initiator=initiator, notified=notified)
        return Ended(row.sid, row.name_id, row.session_index, tuple(notified))


def _meets(person: SignedIn, params: Any) -> bool:
    """Whether the person's login meets the request: no fresh login asked for, recent
    enough (``max_age``), at the level asked for (``acr_values``)."""
    if "login" in (params.get("prompt") or "").split():
        return False
    max_age = params.get("max_age") or ""
    # (One that is not a number the request's check refuses, after this.)
    if MAX_AGE.fullmatch(max_age) and time.time() - person.auth_time.timestamp() > int(max_age):
        return False
    level = asked_level(params.get("acr_values"))
    return level is None or rank(person.acr) >= rank(level)


def _client_named(request: Any) -> str | None:
    """The client a token request names (for its refusal's log line), unchecked."""
    client_id, _ = extract_basic_authorization(request.headers)
    client_id = client_id or request.form.get("client_id")
    return client_id[:64] if isinstance(client_id, str) else None
