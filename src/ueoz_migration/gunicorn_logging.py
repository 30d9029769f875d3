"""gunicorn's own log lines in the service's format, through the service's redaction.

Run gunicorn with ``--logger-class ueoz_migration.gunicorn_logging.GunicornLogger``.

Why a logger class: gunicorn's default one (:class:`gunicorn.glogging.Logger`) sets
``propagate = False`` on its ``gunicorn.error`` and ``gunicorn.access`` loggers and gives them
plain-text handlers of its own, so its lines ("Listening at", "Booting worker", the access log)
never reach the root logger's handler that :func:`~ueoz_migration.logs.configure_logging`
installs: they came out as plain text even with ``LOG_JSON=1``, past the PESEL and e-mail
masking. This one configures that handler in gunicorn's master process too (the application,
which configures it in the workers, is only loaded there), drops gunicorn's handlers and lets
both loggers propagate. Every line then goes to standard output like the rest of the service's;
gunicorn's ``--error-logfile``, ``--access-logfile`` and ``--syslog`` no longer apply.

The access log is always on: the application logs no line per request, so this is the one
record of each request: method, path (masked as every line is: ``/weryfikacja/<token>``, not
the link's token; never the query string), status, duration, bytes sent, and the request id
the application's own lines carry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from gunicorn import glogging

from .adapters.wk import WkSettings
from .config import ConfigError, Settings
from .logs import configure_logging, mask_text

_access = structlog.get_logger("gunicorn.access")


def request_path(environ: dict[str, Any]) -> str:
    """The path to log for a request, masked; never its query string (``SAMLart``, …).

    The path (``/migracja/submit``) tells an operator more than the route it matched would
    (``/migracja/<event>``); a verification link's token, a PESEL or an address in it is
    masked here, and again by the redaction every line passes.
    """
    return mask_text(str(environ.get("PATH_INFO") or "/"))


def access_fields(resp: Any, environ: dict[str, Any], duration: timedelta) -> dict[str, Any]:
    """The fields of one access line, from what gunicorn knows when the response is sent."""
    headers = {name.lower(): value for name, value in getattr(resp, "headers", [])}
    fields: dict[str, Any] = {
        "method": environ.get("REQUEST_METHOD", ""),
        "path": request_path(environ),
        "status": getattr(resp, "status_code", None),
        "duration_ms": round(duration.total_seconds() * 1000, 1),
        "bytes": getattr(resp, "sent", None),
    }
    if request_id := headers.get("x-request-id"):  # ties the line to the request's own lines
        fields["request_id"] = request_id
    return fields


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, writing through the stdlib root logger that ``logs`` configures."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        try:
            settings = Settings.from_env()
            configure_logging(settings)
            # The login's settings too (WK_*), which the app reads in each worker; in
            # development this makes the key pairs once, before the workers start.
            WkSettings.from_env(
                settings.raw,
                base_url=settings.base_url,
                instance_dir=settings.instance_dir,
                production=settings.production,
            )
        except ConfigError as error:
            # Said once by the master, like the CLI does, instead of by every worker that
            # would fail to boot on it.
            raise SystemExit(f"Error: {error}") from None
        for log in (self.error_log, self.access_log):
            # The handlers glogging added (``_gunicorn``), not any a library put there.
            for handler in [each for each in log.handlers if getattr(each, "_gunicorn", False)]:
                log.removeHandler(handler)
                handler.close()
            log.propagate = True  # gunicorn sets False: to the root logger's handler

    @property
    def access_log_enabled(self) -> bool:
        return True

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        try:
            _access.info("http.request", **access_fields(resp, environ, request_time))
        except Exception:
            self.exception("The access line could not be logged")
