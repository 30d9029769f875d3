"""Logs as operators read them: one JSON object a line in production, no frame locals."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from ueoz_migration.config import Settings
from ueoz_migration.logs import configure_logging


def configured(tmp_path, log_json: str):
    """Configure logging as an entry point does; put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(Settings.from_env({"INSTANCE_DIR": str(tmp_path), "LOG_JSON": log_json}))
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def json_logs(tmp_path):
    yield from configured(tmp_path, "1")


@pytest.fixture
def console_logs(tmp_path):
    """The readable lines of development (LOG_JSON=0)."""
    yield from configured(tmp_path, "0")


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_structlog_and_library_logs_come_out_as_json_lines(json_logs, capsys):
    structlog.contextvars.bind_contextvars(request_id="req-7")
    try:
        structlog.get_logger("ueoz_migration.mail").info("mail.sent", to="a***@csioz.pl")
        logging.getLogger("gunicorn.error").warning("worker %s booted", 12)
    finally:
        structlog.contextvars.clear_contextvars()

    sent, gunicorn = lines(capsys)
    assert sent["event"] == "mail.sent" and sent["level"] == "info"
    assert (sent["to"], sent["request_id"]) == ("a***@csioz.pl", "req-7")
    assert sent["timestamp"].endswith("Z")
    assert (gunicorn["event"], gunicorn["logger"]) == ("worker 12 booted", "gunicorn.error")


def test_a_logged_exception_carries_no_local_variables(json_logs, capsys):
    pesel = "97040117247"
    try:
        raise LookupError("no account")
    except LookupError:
        structlog.get_logger("ueoz_migration.workers.search").exception("search.failed")

    (entry,) = lines(capsys)
    assert entry["exception"][0]["exc_type"] == "LookupError"
    assert pesel not in json.dumps(entry)


def test_a_pesel_or_address_that_slips_into_a_log_line_is_masked(json_logs, capsys):
    log = structlog.get_logger("ueoz_migration.web")
    log.info("lookup", detail="PESEL 97040117247 for anna.nowak@csioz.pl")
    logging.getLogger("sqlalchemy").error("duplicate key (pesel)=(97040117247)")
    try:
        raise ValueError("no account for 97040117247")
    except ValueError:
        log.exception("search.failed", event_number="MIGRATION_000000000042")

    rendered = capsys.readouterr().out
    assert "97040117247" not in rendered
    assert "anna.nowak@csioz.pl" not in rendered
    entries = [json.loads(line) for line in rendered.splitlines()]
    assert entries[0]["detail"] == "PESEL ********247 for a***@csioz.pl"
    assert entries[1]["event"] == "duplicate key (pesel)=(********247)"
    assert entries[2]["event_number"] == "MIGRATION_000000000042"


def test_readable_lines_mask_an_exception_text_too(console_logs, capsys):
    log = structlog.get_logger("ueoz_migration.web")
    try:
        raise ValueError("no account for 97040117247 (anna.nowak@csioz.pl)")
    except ValueError as error:
        log.error("web.unhandled_error", exc_info=error)

    rendered = capsys.readouterr().out
    assert "web.unhandled_error" in rendered
    assert "ValueError: no account for ********247 (a***@csioz.pl)" in rendered
    assert "97040117247" not in rendered and "anna.nowak@csioz.pl" not in rendered


def test_a_verification_links_token_never_reaches_a_log_line(json_logs, capsys):
    # The token is a bearer secret: a 405 on the link, an exception's text, Flask's own
    # "Exception on /weryfikacja/…" line would all carry it.
    token = "Zq3vN8yT1kP0wX7mR4sL9dF2hJ6bC5gA"
    logging.getLogger("flask.app").error("Exception on /weryfikacja/%s [GET]", token)
    structlog.get_logger("gunicorn.access").info(
        "http.request", path=f"/weryfikacja/{token}/", status=404
    )

    flask_line, access = lines(capsys)
    assert flask_line["event"] == "Exception on /weryfikacja/<token> [GET]"
    assert access["path"] == "/weryfikacja/<token>/"
