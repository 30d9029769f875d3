"""Where the logs go: structlog on standard output, JSON lines in production.

One call per process, from its entry point, with the process's settings. Standard-library
loggers (gunicorn, alembic, werkzeug, the node adapter) are rendered the same way, so an
operator's log pipeline sees one format. Personal data is kept out upstream, where the log
calls are made (:mod:`ueoz_migration.domain.privacy`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from .config import Settings

_HANDLER_NAME = "ueoz-migration"


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to whatever ``sys.stdout`` is when a record comes (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(settings: Settings, *, level: int = logging.INFO) -> None:
    """Send structlog and stdlib logging to stdout, as JSON when ``LOG_JSON`` is on."""
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
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so that configuring again (tests, a second command) takes effect.
        cache_logger_on_first_use=False,
    )
    handler = _StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [each for each in root.handlers if each.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces each of its plugins at INFO on every upgrade; only its warnings help.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
