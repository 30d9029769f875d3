"""Logins sent to the node and not yet back, in the shared database (``pending_logins``).

The node's answer is a cross-site POST that carries no cookie of ours, so a login is found
again by its RelayState; it is taken only once, only in time, and only by the browser that
started it (the browser's key is stored as a hash, see ``web/auth.py``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import PendingLogin

#: How long a person may spend at the node between leaving and coming back.
PENDING_LOGIN_TTL = timedelta(minutes=15)

#: The shape of the RelayState values handed out (``secrets.token_urlsafe(32)``: 43 chars).
RELAY_STATE = re.compile(r"[A-Za-z0-9_-]{20,80}")

# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
# Run through a session, with synchronize_session=False: SQLAlchemy would otherwise evaluate
# the WHERE clause against loaded objects in Python, where a bound parameter reads as None
# (there are none loaded: each runs first in its transaction).
DELETE_EXPIRED = (
    delete(PendingLogin)
    .where(PendingLogin.expires_at <= bindparam("now"))
    .execution_options(synchronize_session=False)
)
TAKE = (
    update(PendingLogin)
    .where(PendingLogin.relay_state == bindparam("relay"))
    .where(PendingLogin.consumed_at.is_(None))
    .where(PendingLogin.expires_at > bindparam("now"))
    .where(
        or_(
            PendingLogin.browser_key_hash == bindparam("browser"),
            PendingLogin.browser_key_hash.is_(None),  # started before schema 0002: 15 min at most
        )
    )
    .values(consumed_at=bindparam("now"))
    .returning(PendingLogin)
    .execution_options(synchronize_session=False)
)


class Standing(StrEnum):
    """How a login that could not be taken stands, whoever started it."""

    WAITING = "waiting"  # may still come back, but not for this browser
    EXPIRED = "expired"  # its time is up, unused
    UNKNOWN = "unknown"  # never started here, or already taken


@dataclass(frozen=True)
class Destination:
    """Where the person goes once the migration is over, and in which language."""

    domain_system: str | None
    language: str
    # The domain system's authorization request the login serves (oidc/authorizations.py),
    # and the level of assurance it asked for (an eIDAS URI), if any.
    authorization_id: str | None = None
    loa: str | None = None
    # What the login is for: None, the migration; ``console``, the staff console.
    purpose: str | None = None


class PendingLogins:
    """Open, take and look up pending logins; one row each, keyed by RelayState."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @staticmethod
    def new_relay_state() -> str:
        return secrets.token_urlsafe(32)

    def open(
        self, relay_state: str, request_id: str, destination: Destination, *, browser_key_hash: str
    ) -> None:
        """Record the login sent to the node as AuthnRequest ``request_id``.

        Logins whose time is up are deleted on the way, so the table holds only live ones.
        """
        now = datetime.now(UTC)
        with transaction(self.sessions) as db:
            db.execute(DELETE_EXPIRED, {"now": now})
            db.add(
                PendingLogin(
                    relay_state=relay_state,
                    request_id=request_id,
                    domain_system=destination.domain_system,
                    language=destination.language,
                    created_at=now,
                    expires_at=now + PENDING_LOGIN_TTL,
                    browser_key_hash=browser_key_hash,
                    authorization_id=destination.authorization_id,
                    loa=destination.loa,
                    purpose=destination.purpose,
                )
            )

    def take(self, relay_state: str, browser_key_hash: str | None) -> PendingLogin | None:
        """Return the browser's live login for ``relay_state`` and mark it used, once only."""
        if not RELAY_STATE.fullmatch(relay_state):
            # Not one we made: not worth a query, and a NUL in it would make PostgreSQL
            # refuse the query outright.
            return None
        now = datetime.now(UTC)
        with transaction(self.sessions) as db:
            # One statement marks it used and hands it back (SQLite ≥ 3.35 and PostgreSQL).
            return db.scalars(
                TAKE, {"relay": relay_state, "now": now, "browser": browser_key_hash or ""}
            ).one_or_none()

    def standing(self, relay_state: str) -> Standing:
        """Say how the login for ``relay_state`` stands, for one :meth:`take` did not give."""
        if not RELAY_STATE.fullmatch(relay_state):
            return Standing.UNKNOWN
        with snapshot(self.sessions) as db:
            expires_at = db.scalar(
                select(PendingLogin.expires_at)
                .where(PendingLogin.relay_state == relay_state)
                .where(PendingLogin.consumed_at.is_(None))
            )
        if expires_at is None:
            return Standing.UNKNOWN
        return Standing.WAITING if expires_at > datetime.now(UTC) else Standing.EXPIRED
