"""The service provider's replay store in the shared database: one use per artifact, anywhere."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import transaction
from ..db.models import SamlOnce

# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
# synchronize_session=False: see adapters/pending_logins.py.
DELETE_EXPIRED = (
    delete(SamlOnce)
    .where(SamlOnce.expires_at <= bindparam("now"))
    .execution_options(synchronize_session=False)
)


class DbReplayStore:
    """Remember artifacts and assertion IDs in ``saml_once``, shared by every instance.

    The primary key does the work: the first insert of a key wins, every later one (in this
    process or another machine) fails on the constraint. A key whose time has passed is
    deleted first, so the table does not grow without end and an expired key is no obstacle.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def first_use(self, kind: str, key: str, expires_at: datetime) -> bool:
        """Record ``key`` of ``kind``; True the first time, False while it is remembered."""
        # A digest keeps the key short and the same length whatever the node sends.
        stored_key = f"{kind}:{hashlib.sha256(key.encode()).hexdigest()}"
        now = datetime.now(UTC)
        with transaction(self.sessions) as session:
            session.execute(DELETE_EXPIRED, {"now": now})
        try:
            with transaction(self.sessions) as session:
                session.add(SamlOnce(key=stored_key, expires_at=expires_at))
        except IntegrityError:
            return False
        return True
