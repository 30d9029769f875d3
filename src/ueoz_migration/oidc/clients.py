"""The domain systems registered as clients: the registry, and the client as Authlib sees it.

docs/integration.md ("Registering a domain system") lists what a registration holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import OidcClient
from .keys import ALGORITHMS

SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method's name, not a secret
PRIVATE_KEY_JWT = "private_key_jwt"
AUTH_METHODS = (SECRET_BASIC, PRIVATE_KEY_JWT)
#: The scopes a client may be registered for; ``openid`` is always among them.
SCOPES = ("openid", "profile", "email", "roles", "pesel")
DEFAULT_SCOPES = ("openid", "profile", "email", "roles")
PAIRWISE, PUBLIC = "pairwise", "public"


class ClientError(ValueError):
    """A registration cannot be made as asked; the message says why, in one line."""


def secret_hash(secret: str) -> str:
    """SHA-256 of a client secret.

    A fast hash is enough, unlike for passwords: the secrets are ours, 256 random bits each,
    so there is nothing to guess; a slow hash would only slow every token request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Client(ClientMixin):  # type: ignore[misc]
    """A registered domain system, read-only, as the provider and Authlib use it."""

    id: str
    name: str
    auth_method: str
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    backchannel_logout_uri: str | None
    initiate_login_uri: str | None
    jwks: dict | None
    jwks_uri: str | None
    scopes: tuple[str, ...]
    subject_type: str
    id_token_alg: str

    @classmethod
    def from_row(cls, row: OidcClient) -> Client:
        return cls(
            id=row.id,
            name=row.name,
            auth_method=row.auth_method,
            secret_hash=row.secret_hash,
            redirect_uris=tuple(json.loads(row.redirect_uris)),
            post_logout_redirect_uris=tuple(json.loads(row.post_logout_redirect_uris)),
            backchannel_logout_uri=row.backchannel_logout_uri,
            initiate_login_uri=row.initiate_login_uri,
            jwks=json.loads(row.jwks) if row.jwks else None,
            jwks_uri=row.jwks_uri,
            scopes=tuple(row.scopes.split()),
            subject_type=row.subject_type,
            id_token_alg=row.id_token_alg,
        )

    # -- Authlib's ClientMixin -------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self.id

    @property
    def client_metadata(self) -> dict[str, object]:
        return {"post_logout_redirect_uris": list(self.post_logout_redirect_uris)}

    def get_client_id(self) -> str:
        return self.id

    def get_default_redirect_uri(self) -> None:
        return None  # OpenID Connect asks for redirect_uri in every request (Core 3.1.2.1)

    def get_allowed_scope(self, scope: str | None) -> str:
        asked = (scope or "").split()
        return " ".join(name for name in dict.fromkeys(asked) if name in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match, never a prefix

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(secret_hash(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass(frozen=True)
class Registration:
    """What ``clients add`` asks for."""

    id: str
    name: str
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()
    backchannel_logout_uri: str | None = None
    initiate_login_uri: str | None = None
    jwks: dict | None = None
    jwks_uri: str | None = None
    scopes: Sequence[str] = DEFAULT_SCOPES
    public_subject: bool = False
    id_token_alg: str = "ES256"  # noqa: S105 - an algorithm's name


class ClientRegistry:
    """Add, find, change and remove the registered domain systems."""

    def __init__(self, sessions: sessionmaker[Session], *, production: bool) -> None:
        self.sessions = sessions
        self.production = production

    def get(self, client_id: str) -> Client | None:
        if not isinstance(client_id, str) or not client_id:
            return None
        with snapshot(self.sessions) as session:
            row = session.get(OidcClient, client_id)
            return Client.from_row(row) if row is not None else None

    def all(self) -> list[Client]:
        with snapshot(self.sessions) as session:
            rows = session.scalars(select(OidcClient).order_by(OidcClient.id))
            return [Client.from_row(row) for row in rows]

    def add(self, registration: Registration, *, secret: str | None = None) -> str | None:
        """Register a client; return its secret (shown once), or None for private_key_jwt.

        ``secret``: the one it already holds (the demo systems of the embedded default);
        otherwise a new one is made.
        """
        row = self._row(registration)
        if row.auth_method == SECRET_BASIC:
            secret = secret or secrets.token_urlsafe(32)
            row.secret_hash = secret_hash(secret)
        else:
            secret = None
        with transaction(self.sessions) as session:
            if session.get(OidcClient, row.id) is not None:
                raise ClientError(f"client {row.id} is registered already")
            session.add(row)
        return secret

    def rotate_secret(self, client_id: str) -> str:
        """Give a client_secret_basic client a new secret; the old one stops working now."""
        secret = secrets.token_urlsafe(32)
        with transaction(self.sessions) as session:
            row = session.get(OidcClient, client_id)
            if row is None:
                raise ClientError(f"no client {client_id} is registered")
            if row.auth_method != SECRET_BASIC:
                raise ClientError(
                    f"client {client_id} signs its requests with its own key "
                    "(private_key_jwt): it has no secret"
                )
            row.secret_hash = secret_hash(secret)
            row.updated_at = datetime.now(UTC)
        return secret

    def remove(self, client_id: str) -> None:
        with transaction(self.sessions) as session:
            removed = session.execute(delete(OidcClient).where(OidcClient.id == client_id))
            if removed.rowcount != 1:  # type: ignore[attr-defined]
                raise ClientError(f"no client {client_id} is registered")

    # -- checking a registration -----------------------------------------------------------

    def _row(self, registration: Registration) -> OidcClient:
        if not registration.id or len(registration.id) > 64 or not registration.id.isprintable():
            raise ClientError("a client id is 1 to 64 printable characters")
        if not registration.redirect_uris:
            raise ClientError("a client needs at least one --redirect-uri")
        uris = [
            *registration.redirect_uris,
            *registration.post_logout_redirect_uris,
            *filter(None, (registration.backchannel_logout_uri, registration.initiate_login_uri)),
        ]
        for uri in uris:
            self._check_uri(uri)
        if registration.jwks is not None and registration.jwks_uri is not None:
            raise ClientError("give --jwks-uri or --jwks-file, not both")
        if registration.jwks_uri is not None:
            self._check_uri(registration.jwks_uri)
        jwks = None
        if registration.jwks is not None:
            jwks = json.dumps(public_jwks(registration.jwks), sort_keys=True)
        if registration.id_token_alg not in ALGORITHMS:
            raise ClientError(f"ID tokens are signed with {' or '.join(ALGORITHMS)}")
        unknown = sorted(set(registration.scopes) - set(SCOPES))
        if unknown:
            raise ClientError(
                f"unknown scope {', '.join(unknown)} (the scopes are {', '.join(SCOPES)})"
            )
        now = datetime.now(UTC)
        signed = registration.jwks is not None or registration.jwks_uri is not None
        return OidcClient(
            id=registration.id,
            name=registration.name,
            auth_method=PRIVATE_KEY_JWT if signed else SECRET_BASIC,
            secret_hash=None,
            redirect_uris=json.dumps(list(dict.fromkeys(registration.redirect_uris))),
            post_logout_redirect_uris=json.dumps(
                list(dict.fromkeys(registration.post_logout_redirect_uris))
            ),
            backchannel_logout_uri=registration.backchannel_logout_uri,
            initiate_login_uri=registration.initiate_login_uri,
            jwks=jwks,
            jwks_uri=registration.jwks_uri,
            scopes=" ".join(dict.fromkeys(("openid", *registration.scopes))),
            subject_type=PUBLIC if registration.public_subject else PAIRWISE,
            id_token_alg=registration.id_token_alg,
            created_at=now,
            updated_at=now,
        )

    def _check_uri(self, uri: str) -> None:
        """An absolute https address, or http on loopback outside production; no fragment."""
        parts = urlsplit(uri)
        loopback = parts.hostname in {"localhost", "127.0.0.1", "::1"}
        if len(uri) > 2000 or not parts.hostname or parts.fragment:
            raise ClientError(f"{uri!r} is not an absolute address without a fragment")
        if parts.scheme != "https" and not (
            parts.scheme == "http" and loopback and not self.production
        ):
            raise ClientError(
                f"{uri!r} must be an https:// address"
                + ("" if self.production else " (http:// only on loopback, outside production)")
            )


def public_jwks(jwks: object) -> dict:
    """``jwks`` as a JWKS of public keys only; refuse anything else."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientError('the JWKS must be a JSON object with a non-empty "keys" list')
    if any(
        not isinstance(key, dict) or "d" in key or key.get("kty") == "oct" for key in jwks["keys"]
    ):
        raise ClientError("the JWKS must hold public keys only (no private or secret keys)")
    try:
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise ClientError(f"the JWKS does not read as keys: {error}") from None
    return jwks


def names(clients: Iterable[Client]) -> dict[str, str]:
    """Each client's name by its id (the helpdesk shows where a person came from)."""
    return {client.id: client.name for client in clients}
