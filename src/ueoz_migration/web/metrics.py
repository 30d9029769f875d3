"""Each request's time by route, and the requests in progress (:mod:`ueoz_migration.metrics`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request
from werkzeug.wsgi import ClosingIterator

from ..metrics import REQUEST_SECONDS, REQUESTS_IN_PROGRESS

ROUTE = "ueoz.route"
#: The route label of a request no route matched (404s, scanners): one label for them all.
UNMATCHED = "unmatched"


class RequestMetrics:
    """WSGI middleware: time each request from its arrival to its response's last byte.

    Wrapped around Flask's whole request handling, the session's loading and saving
    included; the route is the rule Flask matched (``/weryfikacja/<token>``), never the path.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        status: list[str] = []

        def start(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[:] = [status_line.split(" ", 1)[0]]
            return start_response(status_line, headers, exc_info)

        def finished() -> None:
            REQUESTS_IN_PROGRESS.dec()
            REQUEST_SECONDS.labels(
                environ.get("REQUEST_METHOD", ""),
                environ.get(ROUTE, UNMATCHED),
                status[0] if status else "none",
            ).observe(time.perf_counter() - started)

        REQUESTS_IN_PROGRESS.inc()
        try:
            body = self.app(environ, start)
        except BaseException:
            finished()
            raise
        return ClosingIterator(body, finished)


def install(app: Flask) -> None:
    """Time the app's requests by the route each one matched."""

    def note_route() -> None:
        if request.url_rule is not None:
            request.environ[ROUTE] = request.url_rule.rule

    # First of the hooks: a later one that answers (a refused session, a CSRF failure) still
    # has its request counted under its route.
    app.before_request_funcs.setdefault(None, []).insert(0, note_route)
    app.wsgi_app = RequestMetrics(app.wsgi_app)  # type: ignore[method-assign]
