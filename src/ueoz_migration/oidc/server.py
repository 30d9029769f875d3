"""Authlib's authorization server, configured as UEOZ's OpenID Provider.

Authlib does the protocol (OpenID Connect Core 1.0, RFC 6749, RFC 7636, RFC 7523, RP-Initiated
Logout); the subclasses here only say where its codes, tokens, clients and keys live
(``codes.py``, ``clients.py``, ``keys.py``) and tighten what OpenID Connect leaves open: the
code flow only, PKCE with S256 from every client, ES256, ``openid`` in every request.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfoEndpoint
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError
from authlib.oidc.core.util import create_half_hash
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import g
from flask import request as flask_request
from joserfc import jwt
from joserfc.jwk import KeySet

from .claims import SignedIn, user_info
from .clients import PRIVATE_KEY_JWT, SECRET_BASIC, Client, ClientRegistry
from .codes import Codes, Grantee, IssuedCode
from .keys import ALGORITHMS, SigningKeys

# The paths of the endpoints (web/oidc.py serves them; discovery names them).
DISCOVERY_PATH = "/.well-known/openid-configuration"
AUTHORIZE_PATH = "/oidc/authorize"
TOKEN_PATH = "/oidc/token"  # noqa: S105 - a path, not a secret
USERINFO_PATH = "/oidc/userinfo"
JWKS_PATH = "/oidc/jwks"
END_SESSION_PATH = "/oidc/logout"
#: Algorithms a private_key_jwt client may sign its assertions with.
ASSERTION_ALGORITHMS = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]
#: A max_age the provider takes: whole seconds, up to about 31 years.
MAX_AGE = re.compile(r"[0-9]{1,9}")
#: How long a client's JWKS fetched from its jwks_uri is used before it is fetched again.
JWKS_URI_CACHE_SECONDS = 300.0


class ReplayStore:
    """What remembers client assertion ids (``adapters/wk_replay.DbReplayStore``)."""

    def first_use(self, kind: str, key: str, expires_at: datetime) -> bool:
        raise NotImplementedError


class OidcServer(AuthorizationServer):  # type: ignore[misc]
    """The authorization server, with everything its grants and endpoints ask of it."""

    def __init__(
        self,
        *,
        issuer: str,
        registry: ClientRegistry,
        keys: SigningKeys,
        codes: Codes,
        subject_key: bytes,
        token_ttl: timedelta,
        replay_store: ReplayStore,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__()
        self.issuer = issuer
        self.registry = registry
        self.keys = keys
        self.codes = codes
        self.subject_key = subject_key
        self.token_ttl = token_ttl
        self.replay_store = replay_store
        self.http = http or httpx.Client(timeout=5.0, follow_redirects=False)
        self._jwks_cache: dict[str, tuple[float, KeySet]] = {}
        self._jwks_lock = threading.Lock()
        # What Flask's init_app would set from app.config: the token generator, no scopes
        # list (each client's own scopes apply: Client.get_allowed_scope).
        self.register_token_generator("default", self._bearer_token)
        self.register_grant(AuthorizationCodeGrant, [RequiredS256(), OpenIDCode(codes)])
        self.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJWT(self))
        protector = ResourceProtector()
        protector.register_token_validator(AccessTokenValidator(self))
        self.register_endpoint(UserInfo(resource_protector=protector))
        self.register_endpoint(EndSession)

    # -- what AuthorizationServer asks -----------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        """The registered client, read once per request (Authlib asks several times)."""
        read = g.setdefault("oidc_clients", {})
        if client_id not in read:
            read[client_id] = self.registry.get(client_id)
        return read[client_id]

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.codes.save_token(
            token["access_token"],
            code=request.authorization_code,
            ttl=self.token_ttl,
            scope=token["scope"],
        )

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        """The request being answered, or one kept while the person logged in (stored_request)."""
        if isinstance(request, OAuth2Request):
            return request
        return PublicRequest(flask_request, self.issuer)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass  # no one listens to Flask's signals here

    def get_error_uri(self, request: OAuth2Request, error: Exception) -> None:
        return None

    def stored_request(self, query: str) -> OAuth2Request:
        """An authorization request kept in ``oidc_authorizations``, to complete it later."""
        stored = OAuth2Request("GET", f"{self.issuer}{AUTHORIZE_PATH}?{query}")
        stored.payload = BasicOAuth2Payload(dict(parse_qsl(query, keep_blank_values=True)))
        return stored

    def _bearer_token(
        self,
        grant_type: str,
        client: Client,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        # Code flow, domain systems signing a person in: no refresh tokens.
        return {
            "token_type": "Bearer",
            "access_token": generate_token(43),
            "expires_in": int(self.token_ttl.total_seconds()),
            "scope": scope or "",
        }

    def client_keys(self, client: Client) -> KeySet:
        """A private_key_jwt client's public keys: registered, or from its jwks_uri."""
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)
        assert client.jwks_uri is not None
        with self._jwks_lock:
            cached = self._jwks_cache.get(client.id)
            if cached is not None and time.monotonic() - cached[0] < JWKS_URI_CACHE_SECONDS:
                return cached[1]
        try:
            answer = self.http.get(client.jwks_uri)
            answer.raise_for_status()
            keys = KeySet.import_key_set(answer.json())
        except (httpx.HTTPError, ValueError, TypeError, KeyError) as error:
            raise InvalidClientError(
                description="The client's jwks_uri did not give its keys."
            ) from error
        with self._jwks_lock:
            self._jwks_cache[client.id] = (time.monotonic(), keys)
        return keys

    def id_token(self, request: OAuth2Request, token: dict[str, Any]) -> str:
        """Sign the ID token of a code exchange (OpenID Connect Core 2 and 3.1.3.6)."""
        code: IssuedCode = request.authorization_code
        person: SignedIn = request.user
        client: Client = request.client
        now = int(time.time())
        alg = client.id_token_alg
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client.id,
            "iat": now,
            "exp": now + int(self.token_ttl.total_seconds()),
            "auth_time": code.get_auth_time(),
            "acr": code.acr,
            "sid": person.sid,
            "at_hash": create_half_hash(token["access_token"], alg).decode(),
        }
        if code.nonce:
            claims["nonce"] = code.nonce
        claims.update(user_info(self.subject_key, person, client, code.scope))
        # One key read for the header's kid and the signature: a rotation's switch-over
        # between two reads would name one key and sign with the other.
        key = self.keys.signing_key(alg)
        header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, [alg])


class PublicRequest(FlaskOAuth2Request):  # type: ignore[misc]
    """The Flask request, at the address the service publishes (``BASE_URL``).

    Authlib refuses a request URI that is not https (but on loopback); behind the
    TLS-terminating proxy of production the WSGI request says http. The service's public
    address is its configuration, as everywhere else (``url_for`` is not used for it either).
    """

    def __init__(self, request: Any, issuer: str) -> None:
        super().__init__(request)
        self.uri = issuer + request.full_path.rstrip("?")


class RequiredS256(CodeChallenge):  # type: ignore[misc]
    """PKCE from every client, confidential ones too, and only with S256."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ("S256",)

    def validate_code_challenge(self, grant: grants.BaseGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = (SECRET_BASIC, PRIVATE_KEY_JWT)
    server: OidcServer

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        data = self.request.payload.data
        # What the provider does not do is said, not silently ignored (Core 6, 3.1.2.1).
        if "request" in data:
            raise RequestNotSupportedError(redirect_uri=redirect_uri)
        if "request_uri" in data:
            raise RequestURINotSupportedError(redirect_uri=redirect_uri)
        if data.get("response_mode", "query") != "query":
            raise InvalidRequestError(
                "Only response_mode=query is supported.", redirect_uri=redirect_uri
            )
        if "openid" not in (self.request.scope or "").split():
            raise InvalidScopeError(
                "The scope must include openid (and the client be registered for it).",
                redirect_uri=redirect_uri,
            )
        max_age = data.get("max_age")
        if max_age is not None and not MAX_AGE.fullmatch(max_age):
            raise InvalidRequestError(
                "max_age must be a whole number of seconds.", redirect_uri=redirect_uri
            )
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self.server.codes.save(
            code,
            person=request.user,
            client_id=request.client.id,
            request_data=request.payload.data,
            scope=request.scope,
        )

    def query_authorization_code(self, code: str, client: Client) -> IssuedCode | None:
        return self.server.codes.take(code, client)

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        pass  # taken (marked used) when it was queried: a code is single-use from the start

    def authenticate_user(self, authorization_code: IssuedCode) -> SignedIn | None:
        return authorization_code.person  # read as the code was taken


class OpenIDCode(oidc_grants.OpenIDCode):  # type: ignore[misc]
    """The ``openid`` part of the code flow: the nonce's replay check and the ID token."""

    def __init__(self, codes: Codes) -> None:
        super().__init__(require_nonce=False)
        self.codes = codes

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return self.codes.nonce_seen(request.client.id, nonce)

    def process_token(self, grant: AuthorizationCodeGrant, response: Any) -> Any:
        _, token, _ = response
        token["id_token"] = grant.server.id_token(grant.request, token)
        return token


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """``private_key_jwt`` (OpenID Connect Core 9, RFC 7523): a client's signed assertion."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, server: OidcServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def get_audiences(self) -> list[str]:
        # Core 9: the token endpoint's URL; the issuer is accepted as well (RFC 7523 3).
        return [self.server.issuer + TOKEN_PATH, self.server.issuer]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        from joserfc.errors import JoseError

        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as error:
            raise InvalidClientError(description="The client assertion is not valid.") from error
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC) + timedelta(seconds=self.leeway)
        key = f"{claims['sub']}:{hashlib.sha256(str(jti).encode()).hexdigest()}"
        return self.server.replay_store.first_use("client_assertion", key, expires)

    def resolve_client_public_key(self, client: Client) -> KeySet:
        return self.server.client_keys(client)


class AccessTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, server: OidcServer) -> None:
        super().__init__()
        self.server = server

    def authenticate_token(self, token_string: str) -> Any:
        return self.server.codes.token(token_string, self.server.registry.get)


class UserInfo(UserInfoEndpoint):  # type: ignore[misc]
    server: OidcServer

    def get_issuer(self) -> str:
        return self.server.issuer

    def generate_user_info(self, user: Grantee, scope: str) -> dict[str, Any]:
        return user_info(self.server.subject_key, user.person, user.client, scope)

    def resolve_private_key(self) -> Any:
        return self.server.keys.signing_key()


class EndSession(EndSessionEndpoint):  # type: ignore[misc]
    """RP-Initiated Logout: validates the request; web/oidc.py ends the session itself."""

    server: OidcServer

    def get_server_jwks(self) -> KeySet:
        return self.server.keys.public_key_set()

    def get_algorithms(self) -> list[str]:
        return list(ALGORITHMS)

    def end_session(self, end_session_request: Any) -> None:
        pass  # the caller ends the SSO session (provider.end_session) once this validated
