"""UEOZ's single sign-on sessions: one node login, then every domain system without it.

A session starts at the ACS, from the node's answer, whether or not the person is migrated
yet; domain systems get codes from it only for a verified UEOZ account (:meth:`signed_in`).
Its id is kept in the browser's web session (which ends after 30 minutes without a request),
its public ``sid`` in the ID tokens and logout tokens; it lasts ``SSO_SESSION_HOURS`` at most.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import SsoSession, SsoSessionClient, UeozAccount
from .claims import SignedIn


def utcnow() -> datetime:
    return datetime.now(UTC)


# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
LIVE = (
    select(SsoSession)
    .where(SsoSession.id == bindparam("id"))
    .where(SsoSession.ended_at.is_(None))
    .where(SsoSession.expires_at > bindparam("now"))
)
SIGNED_IN = (
    select(SsoSession, UeozAccount)
    .join(UeozAccount, UeozAccount.pesel_hash == SsoSession.pesel_hash)
    .where(SsoSession.id == bindparam("id"))
    .where(SsoSession.ended_at.is_(None))
    .where(SsoSession.expires_at > bindparam("now"))
    .where(UeozAccount.email_verified_at.is_not(None))
)


def _remember(dialect):  # type: ignore[no-untyped-def]
    # An upsert: two domain systems' codes may be handed out at once in one session.
    statement = dialect.insert(SsoSessionClient)
    return statement.on_conflict_do_update(
        index_elements=[SsoSessionClient.sso_session_id, SsoSessionClient.client_id],
        set_={"last_at": statement.excluded.last_at, "account_id": statement.excluded.account_id},
    )


REMEMBER = {"postgresql": _remember(postgresql), "sqlite": _remember(sqlite)}


def remember_client(
    session: Session, sso_id: str, client_id: str, account_id: int, now: datetime
) -> None:
    """Note, in the caller's transaction, that a domain system signed in through the SSO
    session: it is told when the session ends (logout.py)."""
    statement = REMEMBER[session.get_bind().dialect.name]
    values = {
        "sso_session_id": sso_id,
        "client_id": client_id,
        "account_id": account_id,
        "first_at": now,
        "last_at": now,
    }
    session.execute(statement, values)


@dataclass(frozen=True)
class Live:
    """A live SSO session, whoever it belongs to (migrated or not)."""

    id: str
    sid: str
    pesel_hash: str
    acr: str
    auth_time: datetime
    name_id: str
    session_index: str


def person(sso: SsoSession, account: UeozAccount) -> SignedIn:
    assert account.email_verified_at is not None
    return SignedIn(
        account_id=account.id,
        given_names=account.given_names,
        family_name=account.family_name,
        email=account.email,
        pesel=account.pesel,
        roles=account.roles,
        sso_session_id=sso.id,
        sid=sso.sid,
        acr=sso.acr,
        auth_time=sso.auth_time,
    )


class SsoSessions:
    """Open, read and remember the domain systems of the SSO sessions."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.clock = clock

    def open(self, *, pesel_hash: str, acr: str, name_id: str, session_index: str) -> str:
        """Start a session for a person the node has just logged in; return its id."""
        now = self.clock()
        sso_id = secrets.token_urlsafe(32)
        with transaction(self.sessions) as session:
            session.add(
                SsoSession(
                    id=sso_id,
                    sid=secrets.token_urlsafe(16),
                    pesel_hash=pesel_hash,
                    acr=acr,
                    auth_time=now,
                    name_id=name_id,
                    session_index=session_index,
                    created_at=now,
                    expires_at=now + self.ttl,
                )
            )
        return sso_id

    def renew(self, sso_id: str, *, acr: str, name_id: str, session_index: str) -> None:
        """Record a new node login in a live session: its time, level and node session."""
        with transaction(self.sessions) as session:
            row = session.get(SsoSession, sso_id)
            if row is not None:
                row.auth_time = self.clock()
                row.acr, row.name_id, row.session_index = acr, name_id, session_index

    def live(self, sso_id: str | None) -> Live | None:
        if not sso_id:
            return None
        with snapshot(self.sessions) as session:
            row = session.scalars(LIVE, {"id": sso_id, "now": self.clock()}).one_or_none()
            if row is None:
                return None
            return Live(
                row.id, row.sid, row.pesel_hash, row.acr, row.auth_time, row.name_id,
                row.session_index,
            )  # fmt: skip

    def signed_in(self, sso_id: str | None) -> SignedIn | None:
        """The migrated person of a live session: None without one, or before verification."""
        if not sso_id:
            return None
        with snapshot(self.sessions) as session:
            found = session.execute(SIGNED_IN, {"id": sso_id, "now": self.clock()}).one_or_none()
            return person(*found) if found is not None else None

    def id_for_sid(self, sid: str) -> str | None:
        """The session whose ID tokens carry ``sid`` (an ``id_token_hint`` at logout)."""
        with snapshot(self.sessions) as session:
            return session.scalar(select(SsoSession.id).where(SsoSession.sid == sid))
