"""Authorization requests waiting for the person: through the node login and the migration.

A domain system's request is checked when it arrives (web/oidc.py) and kept here while the
person logs in at the node and, if they still need it, migrates. The browser that made it
holds its id in its session; it is completed once, by the first request that takes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, update
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import OidcAuthorization

# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
TAKE = (
    update(OidcAuthorization)
    .where(OidcAuthorization.id == bindparam("authorization"))
    .where(OidcAuthorization.completed_at.is_(None))
    .where(OidcAuthorization.expires_at > bindparam("now"))
    .values(completed_at=bindparam("now"))
    .returning(OidcAuthorization)
    .execution_options(synchronize_session=False)
)
DELETE_OLD = (
    delete(OidcAuthorization)
    .where(OidcAuthorization.expires_at <= bindparam("now"))
    .execution_options(synchronize_session=False)
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Waiting:
    """A request waiting for the person: which domain system, and its parameters."""

    id: str
    client_id: str
    query: str


class Authorizations:
    """Keep, look up and take the waiting requests."""

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

    def keep(self, client_id: str, query: str) -> str:
        """Keep a checked request; return its id. Requests past their time go on the way."""
        now = self.clock()
        authorization_id = secrets.token_urlsafe(32)
        with transaction(self.sessions) as session:
            session.execute(DELETE_OLD, {"now": now})
            session.add(
                OidcAuthorization(
                    id=authorization_id,
                    client_id=client_id,
                    query=query,
                    created_at=now,
                    expires_at=now + self.ttl,
                )
            )
        return authorization_id

    def get(self, authorization_id: str | None) -> Waiting | None:
        """The request, while it waits (in time, not completed)."""
        if not authorization_id:
            return None
        with snapshot(self.sessions) as session:
            row = session.get(OidcAuthorization, authorization_id)
            if row is None or row.completed_at is not None or row.expires_at <= self.clock():
                return None
            return _waiting(row)

    def take(self, authorization_id: str) -> Waiting | None:
        """Mark the request completed and return it; None if it was taken, or is too old.

        One statement (SQLite ≥ 3.35 and PostgreSQL): of two requests at once (a double
        click), one takes it.
        """
        with transaction(self.sessions) as session:
            row = session.scalars(
                TAKE, {"authorization": authorization_id, "now": self.clock()}
            ).one_or_none()
            return _waiting(row) if row is not None else None


def _waiting(row: OidcAuthorization) -> Waiting:
    return Waiting(row.id, row.client_id, row.query)
