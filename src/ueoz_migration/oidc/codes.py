"""Authorization codes and access tokens: kept as hashes, single-use, short-lived.

A code is taken once (``used_at``); a second use marks it reused and revokes every token it
gave (RFC 6749 4.1.2). The two can race (two token requests with one code): the code's row
is the lock both take, so either the tokens are revoked after they were saved, or the
token is refused because the code was reused first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, TokenMixin
from authlib.oidc.core import AuthorizationCodeMixin
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import OidcCode, OidcToken, SsoSession, UeozAccount
from .claims import SignedIn
from .clients import Client
from .sso import person, remember_client


def utcnow() -> datetime:
    return datetime.now(UTC)


def token_hash(value: str) -> str:
    """SHA-256 of a code or token: random values of ours, so a fast hash does (clients.py)."""
    return hashlib.sha256(value.encode()).hexdigest()


# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
TAKE = (
    update(OidcCode)
    .where(OidcCode.code_hash == bindparam("hash"))
    .where(OidcCode.client_id == bindparam("client"))
    .where(OidcCode.used_at.is_(None))
    .where(OidcCode.expires_at > bindparam("now"))
    .values(used_at=bindparam("now"))
    .returning(OidcCode)
    .execution_options(synchronize_session=False)
)
LOCK_CODE = select(OidcCode).where(OidcCode.code_hash == bindparam("hash")).with_for_update()
REVOKE_FROM_CODE = (
    update(OidcToken)
    .where(OidcToken.code_hash == bindparam("hash"))
    .where(OidcToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)
REVOKE_OF_SESSION = (
    update(OidcToken)
    .where(OidcToken.sso_session_id == bindparam("sso"))
    .where(OidcToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)
# The person of a code or token: the verified account, in a session not ended.
PERSON = (
    select(SsoSession, UeozAccount)
    .join(UeozAccount, UeozAccount.pesel_hash == SsoSession.pesel_hash)
    .where(SsoSession.id == bindparam("sso"))
    .where(SsoSession.ended_at.is_(None))
    .where(UeozAccount.id == bindparam("account"))
    .where(UeozAccount.email_verified_at.is_not(None))
)
TOKEN = select(OidcToken).where(OidcToken.token_hash == bindparam("hash"))


@dataclass(frozen=True)
class IssuedCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """A code taken for exchange, as Authlib's grant reads it."""

    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    account_id: int
    sso_session_id: str
    auth_time: datetime
    acr: str
    person: SignedIn | None  # None once their session ended

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.acr

    def get_amr(self) -> None:
        return None


@dataclass(frozen=True)
class Grantee:
    """Whom a token speaks of, and to which domain system (the claims depend on both)."""

    person: SignedIn
    client: Client


@dataclass(frozen=True)
class AccessToken(TokenMixin):  # type: ignore[misc]
    """An access token presented at the userinfo endpoint."""

    grantee: Grantee
    scope: str
    expires_at: datetime
    revoked: bool
    now: datetime

    def check_client(self, client: Client) -> bool:
        return client.id == self.grantee.client.id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.expires_at - self.now).total_seconds()))

    def is_expired(self) -> bool:
        return self.expires_at <= self.now

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> Grantee:
        return self.grantee

    def get_client(self) -> Client:
        return self.grantee.client


class Codes:
    """Hand out codes, take them back once, and keep the tokens they gave."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        code_ttl: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.code_ttl = code_ttl
        self.clock = clock

    # -- codes -----------------------------------------------------------------------------

    def save(
        self, code: str, *, person: SignedIn, client_id: str, request_data: Any, scope: str
    ) -> None:
        """Keep a code handed out for ``person``, bound to the request's redirect and PKCE,
        and note the domain system in the person's SSO session (it hears of its end)."""
        now = self.clock()
        with transaction(self.sessions) as session:
            session.add(
                OidcCode(
                    code_hash=token_hash(code),
                    client_id=client_id,
                    redirect_uri=request_data["redirect_uri"],
                    scope=scope,
                    nonce=request_data.get("nonce") or None,
                    code_challenge=request_data["code_challenge"],
                    code_challenge_method=request_data.get("code_challenge_method") or "S256",
                    account_id=person.account_id,
                    sso_session_id=person.sso_session_id,
                    auth_time=person.auth_time,
                    acr=person.acr,
                    created_at=now,
                    expires_at=now + self.code_ttl,
                )
            )
            remember_client(session, person.sso_session_id, client_id, person.account_id, now)

    def take(self, code: str, client: Client) -> IssuedCode | None:
        """The client's code, marked used, with its person; None if unknown, too old, or
        used before (then it is marked reused, and the tokens it gave are revoked).

        Its person is None when their session ended since the code was given.
        """
        now, hashed = self.clock(), token_hash(code)
        with transaction(self.sessions) as session:
            row = session.scalars(
                TAKE, {"hash": hashed, "client": client.id, "now": now}
            ).one_or_none()
            if row is not None:
                found = session.execute(
                    PERSON, {"sso": row.sso_session_id, "account": row.account_id}
                ).one_or_none()
                return _issued(row, _as_logged_in(person(*found), row) if found else None)
            used = session.scalars(LOCK_CODE, {"hash": hashed}).one_or_none()
            if used is None or used.client_id != client.id or used.used_at is None:
                return None  # not this client's, or not issued at all, or expired unused
            used.reused_at = used.reused_at or now
            session.execute(REVOKE_FROM_CODE, {"hash": hashed, "now": now})
            return None

    def nonce_seen(self, client_id: str, nonce: str) -> bool:
        """Whether the client sent this nonce before: a replayed request (Core 3.1.2.1)."""
        with snapshot(self.sessions) as session:
            return (
                session.scalar(
                    select(OidcCode.code_hash)
                    .where(OidcCode.client_id == client_id)
                    .where(OidcCode.nonce == nonce)
                    .limit(1)
                )
                is not None
            )

    # -- tokens ----------------------------------------------------------------------------

    def save_token(
        self, access_token: str, *, code: IssuedCode, ttl: timedelta, scope: str
    ) -> None:
        """Keep the access token a code gave; refuse it if the code was reused meanwhile.

        The code's row is locked first, as :meth:`take` locks it to revoke: see the module.
        """
        now = self.clock()
        with transaction(self.sessions) as session:
            row = session.scalars(LOCK_CODE, {"hash": code.code_hash}).one()
            if row.reused_at is not None:
                raise InvalidGrantError("The code was used twice; its tokens are revoked.")
            session.add(
                OidcToken(
                    token_hash=token_hash(access_token),
                    client_id=code.client_id,
                    account_id=code.account_id,
                    scope=scope,
                    sso_session_id=code.sso_session_id,
                    code_hash=code.code_hash,
                    issued_at=now,
                    expires_at=now + ttl,
                )
            )

    def token(
        self, access_token: str, client_of: Callable[[str], Client | None]
    ) -> AccessToken | None:
        """The access token presented, whoever it is for; None if unknown."""
        now = self.clock()
        with snapshot(self.sessions) as session:
            row = session.scalars(TOKEN, {"hash": token_hash(access_token)}).one_or_none()
            if row is None:
                return None
            found = session.execute(
                PERSON, {"sso": row.sso_session_id, "account": row.account_id}
            ).one_or_none()
        client = client_of(row.client_id)
        if client is None or found is None:  # the client was removed, or the session ended
            return None
        grantee = Grantee(person(*found), client)
        return AccessToken(grantee, row.scope, row.expires_at, row.revoked_at is not None, now)

    def revoke_session(self, session: Session, sso_id: str, now: datetime) -> None:
        """Revoke the tokens of an SSO session, in the caller's transaction (its end)."""
        session.execute(REVOKE_OF_SESSION, {"sso": sso_id, "now": now})


def _as_logged_in(signed_in: SignedIn, code: OidcCode) -> SignedIn:
    """The person as the login the code came from found them: its level and time (the ID
    token must say those, not a later login's)."""
    return replace(signed_in, acr=code.acr, auth_time=code.auth_time)


def _issued(row: OidcCode, signed_in: SignedIn | None) -> IssuedCode:
    return IssuedCode(
        code_hash=row.code_hash,
        client_id=row.client_id,
        redirect_uri=row.redirect_uri,
        scope=row.scope,
        nonce=row.nonce,
        code_challenge=row.code_challenge,
        code_challenge_method=row.code_challenge_method,
        account_id=row.account_id,
        sso_session_id=row.sso_session_id,
        auth_time=row.auth_time,
        acr=row.acr,
        person=signed_in,
    )
