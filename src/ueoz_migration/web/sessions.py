"""Server-side web sessions in the service's own database, shared by every instance.

Two kinds of session share the table: a person's, and a staff member's in the console under
``/konsola`` (web/console.py), which has a cookie of its own and ends after 15 minutes without
a request. Which one a request opens is told by its path; both cookies are for the whole
site, so that the ACS, which is not under ``/konsola``, can hand a staff member's new login
the console session it replaces.

flask-session ships an SQLAlchemy backend, but it needs Flask-SQLAlchemy and creates its own
``sessions`` table at start-up, outside our alembic migrations and on an engine of its own.
We subclass its base interface instead: the same cookie handling, id regeneration and
serialisation, stored in the ``web_sessions`` table (``db/models.py``) through the engine the
rest of the service uses, so one migration history describes every table.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from flask import Flask, Request, Response, g, request
from flask_session.base import ServerSideSession, ServerSideSessionInterface
from sqlalchemy import Engine, Insert, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ..db.engine import READ_ONLY
from ..db.models import WebSession
from ..oidc.server import DISCOVERY_PATH, JWKS_PATH, TOKEN_PATH, USERINFO_PATH

# Delete expired sessions on about one request in this many (the table has no TTL of its own).
CLEANUP_EVERY_N_REQUESTS = 500
# An unchanged session's expiry (row and cookie) moves on only once it is this old: the idle
# timeout still runs from the last request, give or take this much, and a page that polls
# does not write to the database every time it asks.
REFRESH_AFTER = timedelta(minutes=1)
# The health endpoints (pages.healthz, pages.readyz) neither read nor write a session: a
# balancer's probe may carry a browser's cookie, and /healthz must answer while the
# database is down, /readyz say so itself. Nor do the provider's endpoints that domain
# systems call server to server. Paths, because the session opens before the URL is
# matched to its view.
SESSIONLESS_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        # The domain systems' server-to-server calls and public documents: no browser, no
        # session (a token request would otherwise make an empty one, every time).
        TOKEN_PATH,
        USERINFO_PATH,
        JWKS_PATH,
        DISCOVERY_PATH,
    }
)
# Where open_session leaves the database's error for refuse_unreadable_session.
SESSION_ERROR = "session_error"


# The statements are built once: building them took a third of the time of reading a session.
# They run on a plain connection, not an ORM session: a row in, a row out, and the ORM's
# session and identity map were half of what was left of the read.
LOAD = (
    select(WebSession.data, WebSession.expires_at)
    .where(WebSession.id == bindparam("id"))
    .where(WebSession.expires_at > bindparam("now"))
)


def _upsert(dialect: ModuleType) -> Insert:
    # An upsert, because two requests of one browser may save the same session at once.
    statement = dialect.insert(WebSession)
    return statement.on_conflict_do_update(
        index_elements=[WebSession.id],
        set_={"data": statement.excluded.data, "expires_at": statement.excluded.expires_at},
    )


UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
# A session that was in the database when the request began is only ever updated, never
# created again: once a logout (or the expiry) has deleted it, a request that read it earlier
# and ends later cannot bring it back. An unchanged one gets its new expiry and nothing else,
# so a poll that read the session before a change in another tab does not undo the change.
UPDATE_DATA = (
    update(WebSession)
    .where(WebSession.id == bindparam("sid"))
    .values(data=bindparam("new_data"), expires_at=bindparam("new_expires_at"))
)
UPDATE_EXPIRY = (
    update(WebSession)
    .where(WebSession.id == bindparam("sid"))
    .values(expires_at=bindparam("new_expires_at"))
)


def refuse_unreadable_session() -> None:
    """Fail a request whose session the database did not give us, with the database's error.

    A ``before_request`` hook (``errors.install`` adds it, after the request has its id), so
    the request fails as any database failure does, before its view runs. Raising in
    ``open_session`` itself would leave Flask with no session at all, and the error page,
    which reads the person's language from it, would fail in turn; with the null session it
    gets instead, that page is in Polish (the language was in the row we could not read).
    """
    error = g.pop(SESSION_ERROR, None)
    if error is not None:
        raise error


@dataclass(frozen=True)
class Realm:
    """Requests under ``path`` keep a session of their own: its cookie, its idle lifetime."""

    path: str
    cookie: str
    lifetime: timedelta

    def holds(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path + "/")


class DatabaseSessionInterface(ServerSideSessionInterface):
    """Keep each session's data in ``web_sessions``; the cookie carries only its random id."""

    ttl = False  # expiry is a column we filter on, not something the database enforces

    def __init__(self, app: Flask, engine: Engine, realm: Realm | None = None) -> None:
        self.engine = engine
        self.upsert = UPSERT[engine.dialect.name]
        self.realm = realm
        super().__init__(
            app,
            key_prefix="",
            permanent=True,
            sid_length=32,
            serialization_format="msgpack",
            cleanup_n_requests=CLEANUP_EVERY_N_REQUESTS,
        )

        self._stored = threading.local()  # the loaded session's expiry, per request thread

    # -- which session: the person's, or the realm's (by the request's path) ----------------

    def _in_realm(self) -> bool:
        return self.realm is not None and self.realm.holds(request.path)

    def get_cookie_name(self, app: Flask) -> str:
        return (
            self.realm.cookie if self.realm and self._in_realm() else super().get_cookie_name(app)
        )

    def lifetime(self, app: Flask) -> timedelta:
        return (
            self.realm.lifetime
            if self.realm and self._in_realm()
            else app.permanent_session_lifetime
        )

    def get_expiration_time(self, app: Flask, session: Any) -> datetime | None:
        return datetime.now(UTC) + self.lifetime(app) if session.permanent else None

    def realm_session(self, request: Request) -> dict[str, Any] | None:
        """The data of the realm's session this request's browser holds, from outside it."""
        assert self.realm is not None
        sid = request.cookies.get(self.realm.cookie)
        return self._retrieve_session_data(self._get_store_id(sid)) if sid else None

    def start_realm_session(self, app: Flask, response: Response, data: dict[str, Any]) -> None:
        """Give the browser a new session of the realm holding ``data``, from outside it.

        For the ACS (``/saml/acs``), which is not under the realm's path: a staff member's
        node login ends there, and their console session starts with the answer. The one it
        replaces, if any, is deleted: a login gives a new session id.
        """
        assert self.realm is not None
        old = request.cookies.get(self.realm.cookie)
        if old:
            self._delete_session(self._get_store_id(old))
        session = self.session_class(data, sid=self._generate_sid(self.sid_length), permanent=True)
        expires_at = datetime.now(UTC) + self.realm.lifetime
        with self.engine.begin() as connection:
            connection.execute(
                self.upsert,
                {
                    "id": session.sid,
                    "data": self.serializer.encode(session),
                    "expires_at": expires_at,
                },
            )
        response.set_cookie(
            self.realm.cookie,
            session.sid,
            expires=expires_at,
            path=self.get_cookie_path(app),
            httponly=True,
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
        )

    def open_session(self, app: Flask, request: Request) -> ServerSideSession | None:  # type: ignore[override]
        if request.path in SESSIONLESS_PATHS:
            return None  # Flask's null session: nothing read, nothing saved
        self._stored.expires_at = None
        try:
            session = self._open(app, request)
        except SQLAlchemyError as error:
            setattr(g, SESSION_ERROR, error)  # see refuse_unreadable_session
            return None
        session.stored_expires_at = self._stored.expires_at  # type: ignore[attr-defined]
        # The id whose row this request read, if it read one (regenerate() changes the id).
        stored = self._stored.expires_at is not None
        session.stored_sid = session.sid if stored else None  # type: ignore[attr-defined]
        return session

    def _open(self, app: Flask, request: Request) -> ServerSideSession:
        """flask-session's own opening, with the cookie of the request's kind of session."""
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid:
            data = self._retrieve_session_data(self._get_store_id(sid))
            if data is not None:
                return self.session_class(data, sid=sid)
        return self.session_class(sid=self._generate_sid(self.sid_length), permanent=self.permanent)

    def _cleanup_n_requests(self) -> None:
        # Not on a request without a session: a probe must not touch the database, and one
        # whose session could not be read fails as that, further on.
        if request.path in SESSIONLESS_PATHS or SESSION_ERROR in g:
            return
        super()._cleanup_n_requests()

    def should_set_storage(self, app: Flask, session: ServerSideSession) -> bool:
        return session.modified or self._refresh_due(app, session)

    def should_set_cookie(self, app: Flask, session: ServerSideSession) -> bool:  # type: ignore[override]
        return session.modified or (session.permanent and self._refresh_due(app, session))

    def _refresh_due(self, app: Flask, session: ServerSideSession) -> bool:
        if not app.config["SESSION_REFRESH_EACH_REQUEST"]:
            return False
        stored = getattr(session, "stored_expires_at", None)
        if stored is None:
            return True
        if stored.tzinfo is None:  # SQLite hands times back without their zone
            stored = stored.replace(tzinfo=UTC)
        fresh = datetime.now(UTC) + self.lifetime(app)
        return fresh - stored >= REFRESH_AFTER

    def _retrieve_session_data(self, store_id: str) -> dict | None:
        # A snapshot read (see db.engine.snapshot): on SQLite it waits for no writer.
        with self.engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            row = connection.execute(LOAD, {"id": store_id, "now": datetime.now(UTC)}).first()
        if row is None:
            return None
        self._stored.expires_at = row.expires_at
        return self.serializer.decode(row.data)

    def _delete_session(self, store_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(WebSession).where(WebSession.id == store_id))

    def _upsert_session(
        self, session_lifetime: timedelta, session: ServerSideSession, store_id: str
    ) -> None:
        # flask-session hands the application's lifetime: the realm's is its own.
        expires_at = datetime.now(UTC) + self.lifetime(self.app)
        values: dict[str, object]
        if getattr(session, "stored_sid", None) != session.sid:
            # A new session, or a new id for one (login, verification): create its row.
            statement = self.upsert
            data = self.serializer.encode(session)
            values = {"id": store_id, "data": data, "expires_at": expires_at}
        elif session.modified:
            statement = UPDATE_DATA
            data = self.serializer.encode(session)
            values = {"sid": store_id, "new_data": data, "new_expires_at": expires_at}
        else:
            statement = UPDATE_EXPIRY
            values = {"sid": store_id, "new_expires_at": expires_at}
        with self.engine.begin() as connection:
            connection.execute(statement, values)

    def _delete_expired_sessions(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(WebSession).where(WebSession.expires_at <= datetime.now(UTC)))
