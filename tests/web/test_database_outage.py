"""The web service while its database is out of reach: probes answer, pages say so in one line.

A balancer's probe may carry a browser's session cookie; the service must then still say
whether it is alive and ready. A person's page fails with the error page, and the log gets one
line a request, not the tracebacks an outage multiplies by every request.
"""

from __future__ import annotations

import html
import logging
import secrets
import sqlite3
from collections.abc import Iterator

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from structlog.testing import capture_logs

from tests.conftest import make_settings
from tests.ports import free_port
from ueoz_migration.bootstrap import Services
from ueoz_migration.web import create_app

POLISH_ERROR = "<h1>Wystąpił błąd po naszej stronie</h1>"
ENGLISH_ERROR = "<h1>Something went wrong on our side</h1>"


@pytest.fixture(params=["postgresql", "sqlite"])
def unreachable(request, tmp_path) -> Iterator[FlaskClient]:
    """A client of a web instance whose database is down: nothing listens on PostgreSQL's
    port, or SQLite's folder is gone. It carries a session cookie from before the outage."""
    if request.param == "postgresql":
        url = f"postgresql://ueoz@127.0.0.1:{free_port()}/ueoz"
    else:
        url = f"sqlite:///{tmp_path / 'gone' / 'ueoz.sqlite3'}"
    # An outage, not a restart: no wait for the server to come back.
    services = Services(make_settings(tmp_path, url, DATABASE_CONNECT_WAIT_SECONDS="0"))
    app = create_app(services=services)
    app.config.update(TESTING=True, PROPAGATE_EXCEPTIONS=False)  # as gunicorn serves it
    client = app.test_client()
    client.set_cookie("ueoz_session", secrets.token_urlsafe(32))
    yield client
    services.engine.dispose()


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def test_the_probes_answer_for_themselves_though_a_session_cookie_comes_along(unreachable):
    with capture_logs() as logs:
        ready = unreachable.get("/readyz")
        alive = unreachable.get("/healthz")

    assert (ready.status_code, ready.get_json()) == (
        503,
        {"status": "unavailable", "database": "unreachable"},
    )
    assert (alive.status_code, alive.get_json()) == (200, {"status": "ok"})
    assert "Set-Cookie" not in ready.headers and "Set-Cookie" not in alive.headers
    assert [entry for entry in logs if entry["log_level"] == "error"] == []


def test_a_page_while_the_database_is_down_is_the_error_page_and_one_log_line(unreachable, caplog):
    with capture_logs() as logs, caplog.at_level(logging.ERROR):
        response = unreachable.get("/migracja")

    # The person's language was in the session the database did not give: the default one.
    assert response.status_code == 503
    assert POLISH_ERROR in text_of(response)
    assert "Traceback" not in text_of(response)
    assert response.headers["X-Request-Id"]
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["event"] == "web.database_unavailable"
    assert (line["path"], line["error"]) == ("/migracja", "OperationalError")
    assert "exc_info" not in line
    assert [record for record in caplog.records if record.exc_info] == []  # Flask's own


def test_a_connection_lost_mid_request_keeps_the_persons_language_and_only_its_faults_a_traceback(
    app, browser, start_attempt, services, monkeypatch, caplog
):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    browser.hold(start_attempt().id)
    browser.language("en")

    def connection_lost(_attempt_id):
        raise OperationalError(
            "SELECT attempts …", {}, Exception("server closed the connection unexpectedly")
        )

    monkeypatch.setattr(services.journey, "get", connection_lost)
    with capture_logs() as logs, caplog.at_level(logging.ERROR):
        response = browser.get("/migracja")

    assert response.status_code == 503
    assert ENGLISH_ERROR in text_of(response)
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert (line["event"], line["error"]) == ("web.database_unavailable", "OperationalError")
    assert "exc_info" not in line
    assert [record for record in caplog.records if record.exc_info] == []

    # A database error that is a fault of ours (the database answered: no) keeps its
    # traceback for the developers, and the page says what it always said.
    def refused(_attempt_id):
        raise IntegrityError("INSERT …", {}, Exception("duplicate key"))

    monkeypatch.setattr(services.journey, "get", refused)
    with capture_logs() as logs:
        response = browser.get("/migracja")

    assert response.status_code == 500
    assert ENGLISH_ERROR in text_of(response)
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["event"] == "web.unhandled_error" and "exc_info" in line


def test_a_form_sent_while_the_database_is_down_is_no_expired_form(unreachable):
    # The form's CSRF token is checked against the session the database did not give.
    with capture_logs() as logs:
        response = unreachable.post("/migracja/cancel", data={"csrf_token": "from-the-page"})

    assert response.status_code == 503
    assert POLISH_ERROR in text_of(response)
    assert "Formularz wygasł" not in text_of(response)
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["event"] == "web.database_unavailable"
    assert response.headers["X-Request-Id"]  # the request had its id before it failed


@pytest.mark.parametrize(
    "refusal",
    [
        sqlite3.OperationalError("no such column: attempts.nickname"),  # a bug of ours
        psycopg.errors.DeadlockDetected("deadlock detected"),  # locks taken out of order
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    ],
    ids=["sqlite-no-such-column", "postgresql-deadlock", "postgresql-statement-timeout"],
)
def test_a_statement_the_database_refused_is_a_fault_with_its_traceback_not_an_outage(
    app, browser, start_attempt, services, monkeypatch, refusal, caplog
):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    browser.hold(start_attempt().id)

    def refused(_attempt_id):
        raise OperationalError("SELECT attempts …", {}, refusal)

    monkeypatch.setattr(services.journey, "get", refused)
    with capture_logs() as logs, caplog.at_level(logging.ERROR):
        response = browser.get("/migracja")

    assert response.status_code == 500
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["event"] == "web.unhandled_error" and "exc_info" in line
    # One traceback, ours: Flask's own copy ("Exception on /migracja [GET]") is dropped.
    assert [record for record in caplog.records if record.exc_info] == []


def test_a_database_file_that_is_no_database_is_an_outage_too(tmp_path):
    from sqlalchemy import create_engine

    from ueoz_migration.web.errors import database_unavailable

    junk = tmp_path / "ueoz.sqlite3"
    junk.write_bytes(b"not a database, only junk " * 100)
    engine = create_engine(f"sqlite:///{junk}")
    with pytest.raises(DatabaseError) as caught, engine.connect() as connection:
        connection.execute(text("SELECT 1 FROM attempts"))
    engine.dispose()

    assert database_unavailable(caught.value)
    assert database_unavailable(
        OperationalError("INSERT …", {}, psycopg.errors.DiskFull("could not extend file"))
    )


class ServerRestart:
    """Once armed, the next statement that reads an attempt finds its connection ended by the
    server, as in a PostgreSQL restart: the backend serving it is terminated before it runs."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.armed = False
        self.ended = 0

    def arm(self) -> None:
        self.armed = True

    def __call__(self, connection, _cursor, statement, *_args) -> None:
        if not self.armed or "FROM attempts" not in statement:
            return
        self.armed = False
        pid = connection.connection.dbapi_connection.info.backend_pid
        with self.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        self.ended += 1


@pytest.fixture
def restart(services) -> Iterator[ServerRestart]:
    restart = ServerRestart(services.engine)
    event.listen(services.engine, "before_cursor_execute", restart)
    yield restart
    event.remove(services.engine, "before_cursor_execute", restart)


def heading(response) -> str:
    return text_of(response).split("<h1", 1)[1].split("</h1>", 1)[0]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_page_whose_connection_the_server_ended_is_run_again_and_shown(
    app, browser, start_attempt, restart
):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    browser.hold(start_attempt("found").id)
    expected = heading(browser.get("/migracja"))

    restart.arm()
    with capture_logs() as logs:
        response = browser.get("/migracja")

    assert restart.ended == 1
    assert response.status_code == 200
    assert heading(response) == expected
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert (line["event"], line["path"], line["run_again"]) == (
        "web.database_unavailable",
        "/migracja",
        True,
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_form_whose_connection_the_server_ended_is_not_sent_again(
    app, browser, start_attempt, services, restart
):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    attempt = start_attempt("found")
    browser.hold(attempt.id)
    token = browser.token()

    restart.arm()
    with capture_logs() as logs:
        response = browser.post("/migracja/cancel", token=token, follow=False)

    assert restart.ended == 1
    assert response.status_code == 503
    assert POLISH_ERROR in text_of(response)
    assert services.journey.get(attempt.id).state == "found"  # nothing half-done
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert "run_again" not in line
