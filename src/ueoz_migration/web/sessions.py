"""Server-side web sessions in the service's own database, shared by every instance.

flask-session ships an SQLAlchemy backend, but it needs Flask-SQLAlchemy and creates its own
``sessions`` table at start-up, outside our alembic migrations and on an engine of its own.
We subclass its base interface instead: the same cookie handling, id regeneration and
serialisation, stored in the ``web_sessions`` table (``db/models.py``) through the engine the
rest of the service uses, so one migration history describes every table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from flask_session.base import ServerSideSession, ServerSideSessionInterface
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import transaction
from ..db.models import WebSession

# Delete expired sessions on about one request in this many (the table has no TTL of its own).
CLEANUP_EVERY_N_REQUESTS = 500


class DatabaseSessionInterface(ServerSideSessionInterface):
    """Keep each session's data in ``web_sessions``; the cookie carries only its random id."""

    ttl = False  # expiry is a column we filter on, not something the database enforces

    def __init__(self, app: Flask, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        super().__init__(
            app,
            key_prefix="",
            permanent=True,
            sid_length=32,
            serialization_format="msgpack",
            cleanup_n_requests=CLEANUP_EVERY_N_REQUESTS,
        )

    def _retrieve_session_data(self, store_id: str) -> dict | None:
        with self.sessions() as session:
            data = session.scalar(
                select(WebSession.data)
                .where(WebSession.id == store_id)
                .where(WebSession.expires_at > datetime.now(UTC))
            )
        return self.serializer.decode(data) if data is not None else None

    def _delete_session(self, store_id: str) -> None:
        with transaction(self.sessions) as session:
            session.execute(delete(WebSession).where(WebSession.id == store_id))

    def _upsert_session(
        self, session_lifetime: timedelta, session: ServerSideSession, store_id: str
    ) -> None:
        values = {
            "id": store_id,
            "data": self.serializer.encode(session),
            "expires_at": datetime.now(UTC) + session_lifetime,
        }
        with transaction(self.sessions) as db:
            # An upsert, because two requests of one browser may save the same session at once.
            dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
            statement = dialect.insert(WebSession).values(values)
            db.execute(
                statement.on_conflict_do_update(
                    index_elements=[WebSession.id],
                    set_={"data": values["data"], "expires_at": values["expires_at"]},
                )
            )

    def _delete_expired_sessions(self) -> None:
        with transaction(self.sessions) as session:
            session.execute(delete(WebSession).where(WebSession.expires_at <= datetime.now(UTC)))
