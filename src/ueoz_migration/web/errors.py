"""Friendly error pages in the person's language; never a stack trace."""

from __future__ import annotations

import structlog
from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

log = structlog.get_logger(__name__)

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


def install(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError) -> tuple[str, int]:
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
        log.error("web.unhandled_error", path=_route(), error=repr(original), exc_info=original)
        try:
            return render_template("errors/500.html"), 500
        except Exception:  # the page itself failed (database gone?): still no stack trace
            log.exception("web.error_page_failed")
            return PLAIN_500, 500
