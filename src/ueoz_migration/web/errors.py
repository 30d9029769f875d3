"""Friendly error pages in the person's language; never a stack trace."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable

import structlog
from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

from .sessions import refuse_unreadable_session

log = structlog.get_logger(__name__)

# Set by the error page of a GET whose database connection broke under it; read by
# RunAgainAfterLostConnection, which runs the request once more.
LOST_CONNECTION = "ueoz.lost_connection"
RUN_AGAIN = "ueoz.run_again"

PAGES = {
    400: "errors/400.html",
    403: "errors/403.html",
    404: "errors/404.html",
    405: "errors/405.html",
    413: "errors/400.html",
    429: "errors/400.html",
}


PLAIN_500 = (
    '<!doctype html><html lang="pl"><meta charset="utf-8"><title>UEOZ</title>'
    "<h1>Wystąpił błąd po naszej stronie</h1><p>Spróbuj ponownie za chwilę.</p>"
    '<p lang="en">Something went wrong on our side. Try again in a moment.</p></html>'
)


def _route() -> str:
    """The route a request matched (``/weryfikacja/<token>``), not its path: no link's token."""
    return request.url_rule.rule if request.url_rule is not None else request.path


# SQLSTATEs of a server that cannot serve at all: the connection classes (08…), and the
# server shutting down, crashed or still starting (57P01–57P03). Deadlocks, serialization
# failures, cancelled statements and locks not granted are OperationalErrors too, but they
# are faults to look into, with their traceback.
_SERVER_GONE = (
    "08",  # connection exceptions
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57P01",  # admin shutdown
    "57P02",  # crash shutdown
    "57P03",  # cannot connect now (starting up)
    "58",  # system errors: I/O
)
# SQLite's codes of a database file that cannot be used at all: its folder gone, not a
# database, read-only, the disk full or failing.
_FILE_GONE = (
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_NOTADB",
    "SQLITE_READONLY",
    "SQLITE_FULL",
)


def database_unavailable(error: BaseException) -> bool:
    """Say whether ``error`` is the database out of reach, not a fault of this code.

    A connection refused or lost (SQLAlchemy invalidated it, or the driver says so without a
    SQLSTATE, as psycopg does when it cannot connect), a server shutting down, no pooled
    connection free in time (a server that stopped answering holds them all), a server or a
    SQLite file out of disk, memory or connections, a SQLite file that cannot be opened, read or
    written. Not a statement the database refused (no such column, a deadlock, a statement
    timeout, "database is locked"): that keeps its traceback.
    """
    if isinstance(error, (InterfaceError, PoolTimeout)):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    if isinstance(original, sqlite3.Error):  # "not a database" is no OperationalError
        return str(getattr(original, "sqlite_errorname", "")).startswith(_FILE_GONE)
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(original, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_SERVER_GONE)


def install(app: Flask) -> None:
    # After security.install's hook, so that the failure has the request's id.
    app.before_request(refuse_unreadable_session)

    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError) -> tuple[str, int]:
        # (A session the database did not give never gets here: refuse_unreadable_session runs
        # first, and create_app sets CSRF's check up after it.)
        # An old tab, an expired session or a forged form: refuse, and say how to go on.
        log.info("web.csrf_refused", path=_route(), reason=error.description)
        return render_template("errors/csrf.html"), 400

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[str, int] | HTTPException:
        code = error.code or 500
        if code >= 500:
            return _server_error(error)
        if code not in PAGES:
            return error
        return render_template(PAGES[code], error=error), code

    @app.errorhandler(InternalServerError)
    def _server_error(error: Exception) -> tuple[str, int]:
        original = getattr(error, "original_exception", None) or error
        if database_unavailable(original):
            # While the database is down every request fails alike, and a traceback apiece
            # would bury the log. One line each, the class only: the message may quote the
            # values of the statement (a PESEL, an address). The person sees the page of any
            # failure on our side, as 503.
            again = _can_run_again(original)
            log.error(
                "web.database_unavailable",
                path=_route(),
                error=type(original).__name__,
                **({"run_again": True} if again else {}),
            )
            request.environ[LOST_CONNECTION] = again
            return _error_page(503)
        log.error("web.unhandled_error", path=_route(), error=repr(original), exc_info=original)
        return _error_page(500)

    app.wsgi_app = RunAgainAfterLostConnection(app.wsgi_app)  # type: ignore[method-assign]

    # Flask logs every unhandled error with its traceback ("Exception on …") before the
    # handler above runs, which logs it again (web.unhandled_error, with the request's id) or
    # as the one line of an outage (web.database_unavailable): Flask's copy goes.
    app.logger.addFilter(_without_flasks_copy)


def _can_run_again(error: BaseException) -> bool:
    """A GET or HEAD, run once so far, whose connection broke under it (not one refused)."""
    return (
        request.method in ("GET", "HEAD")
        and not request.environ.get(RUN_AGAIN)
        and isinstance(error, DBAPIError)
        and error.connection_invalidated
    )


class RunAgainAfterLostConnection:
    """Run a GET or HEAD once more when the database connection it used broke under it.

    A PostgreSQL restart or failover ends the connections in use, and a request caught
    in the middle fails though the server is back a moment later. Its transaction went with
    the connection, and a GET asks for nothing that running it again would do twice (a
    verification link opened twice is answered as the one open), so it runs again, once, on a
    new connection, which waits for the server (DATABASE_CONNECT_WAIT_SECONDS). A POST is not
    run again: its commit may have gone through before the connection broke. nginx cannot do
    this for us: a 503 passed on to the next instance counts as that instance failing, and
    in an outage every instance would be taken out of the upstream at once.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:
        def start(status: str, headers: list, exc_info: object = None) -> object:
            if environ.get(LOST_CONNECTION):
                return _discard  # this answer goes unsent: the request runs again
            return start_response(status, headers, exc_info)

        body = self.app(environ, start)
        if not environ.pop(LOST_CONNECTION, False):
            return body
        if hasattr(body, "close"):
            body.close()
        environ[RUN_AGAIN] = True
        return self.app(environ, start_response)


def _discard(_data: bytes) -> None:
    pass


def _without_flasks_copy(record: logging.LogRecord) -> bool:
    # Flask's logger is the package's own ("ueoz_migration.web"): its lines go, ours stay.
    return record.funcName != "log_exception"


def _error_page(status: int) -> tuple[str, int]:
    try:
        return render_template("errors/500.html"), status
    except Exception:  # the page itself failed: still no stack trace for the person
        log.exception("web.error_page_failed")
        return PLAIN_500, status
