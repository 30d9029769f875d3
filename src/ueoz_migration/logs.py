"""Where the logs go: structlog, JSON lines in production, on standard output.

The ``ueoz-migration`` commands log to standard error: their standard output is the answer.

One call per process, from its entry point, with the process's settings. Standard-library
loggers (gunicorn, alembic, werkzeug, the stand-in node) are rendered the same way, so an
operator's log pipeline sees one format; gunicorn's own lines only when it runs with
``--logger-class ueoz_migration.gunicorn_logging.GunicornLogger`` (its default logger keeps
them from the root logger, see :mod:`ueoz_migration.gunicorn_logging`). Personal data is kept
out upstream, where the log calls are made (:mod:`ueoz_migration.domain.privacy`).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from .config import Settings
from .domain.privacy import mask_email, mask_pesel

_HANDLER_NAME = "ueoz-migration"


class _StandardStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to whatever ``sys.stdout`` (or ``sys.stderr``) is when a record comes.

    Test runners swap them.
    """

    def __init__(self, to_stderr: bool) -> None:
        self.to_stderr = to_stderr
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


# A PESEL is eleven digits standing alone (event numbers are twelve, after "MIGRATION_").
_PESEL = re.compile(r"(?<![\w])\d{11}(?![\w])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A verification link's token is a bearer secret: whoever reads it can verify the address.
_LINK_TOKEN = re.compile(r"(/weryfikacja/)[^/\s?#\"'<>]+")


def mask_text(text: str) -> str:
    """``text`` with every PESEL, e-mail address and verification link token in it masked."""
    text = _PESEL.sub(lambda match: mask_pesel(match.group()), text)
    text = _LINK_TOKEN.sub(r"\1<token>", text)
    return _EMAIL.sub(lambda match: mask_email(match.group()), text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {key: _mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask_value(item) for item in value)
    return value


def redact_personal_data(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Mask any PESEL, e-mail address or verification link token that reached a log line.

    The log calls already pass masked values (:mod:`ueoz_migration.domain.privacy`); this is
    the net under them, for a library's message or an exception text quoting a value.
    """
    return {key: _mask_value(value) for key, value in event.items()}


def configure_logging(
    settings: Settings, *, level: int = logging.INFO, to_stderr: bool = False
) -> None:
    """Send structlog and stdlib logging to stdout, as JSON when ``LOG_JSON`` is on.

    ``to_stderr``: to standard error instead, for a command whose standard output is its
    answer (the ``ueoz-migration`` commands), which its log lines must not mix into.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,  # the request id the web layer binds
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if settings.log_json:
        # Tracebacks as data, without the frames' local variables: they hold personal data.
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(transformer))
        renderer = structlog.processors.JSONRenderer()
    else:
        # The traceback as text before the redaction runs, as in JSON: left to the console
        # renderer, it would be formatted after it, and an exception quoting a PESEL or an
        # address would be printed whole.
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so that configuring again (tests, a second command) takes effect.
        cache_logger_on_first_use=False,
    )
    handler = _StandardStreamHandler(to_stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            # Redact last, after exceptions were rendered into text.
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_personal_data,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [each for each in root.handlers if each.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces each of its plugins at INFO on every upgrade; only its warnings help.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # psycopg warns when it closes a pipeline that a refused statement aborted, naming the
    # server, user and database; the error itself reaches us as an exception, said once.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
