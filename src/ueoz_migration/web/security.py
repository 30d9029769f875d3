"""Headers every response carries, and the request id that ties a page to its log lines."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import structlog
from flask import Flask, Response, g

PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=(), interest-cohort=()"
)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(node_sso_url: str | None) -> str:
    """Allow our own scripts, styles and forms only; forms may also post to the login node."""
    form_action = "'self'" + (f" {origin_of(node_sso_url)}" if node_sso_url else "")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"form-action {form_action}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def current_request_id() -> str:
    return g.get("request_id", "")


def install(app: Flask, *, production: bool, node_sso_url: str | None) -> None:
    """Give every request an id (logs, X-Request-Id) and every response the security headers."""
    csp = content_security_policy(node_sso_url)

    @app.before_request
    def _bind_request_id() -> None:
        g.request_id = uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", csp)
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Permissions-Policy"] = PERMISSIONS_POLICY
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if production:
            headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if response.mimetype == "text/html":
            # Pages show personal data: keep them out of shared and back-button caches.
            headers.setdefault("Cache-Control", "no-store")
        if request_id := g.get("request_id"):
            headers["X-Request-Id"] = request_id
        return response

    @app.teardown_request
    def _unbind(_error: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()
