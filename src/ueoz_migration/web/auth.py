"""Login through Węzeł Krajowy (login.gov.pl) and logout: the routes around the SP library.

``/login`` records a pending login and sends the browser to the node with a signed
AuthnRequest; the node sends it back to the assertion consumer service (ACS) with an
artifact, which the SP library resolves over SOAP into the person's identity. The pending
login is found again by its RelayState, not by a cookie: the node's POST back is cross-site,
and a SameSite=Lax cookie does not travel with it.

The answer is taken only in the browser that started the login (no login CSRF: a page
elsewhere must not be able to log a visitor in as someone else by posting that someone's
artifact). ``/login`` keeps a random key in the session and the pending login its hash.
When the node's cross-site POST arrives without the session cookie, the ACS answers with a
form that posts the same fields back to itself from this site, so that the cookie comes
along; a login whose key still does not match is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from ..adapters.pending_logins import Destination, Standing
from ..adapters.wk import FailureReason, LoginFailed, ServiceProvider, WkSettings
from ..bootstrap import Services
from ..domain.identity import Person
from ..domain.privacy import mask_pesel
from .common import ATTEMPT_KEY, services, start_again_args, user
from .i18n import current_language

log = structlog.get_logger(__name__)
blueprint = Blueprint("auth", __name__)

#: The session's key naming this browser to its pending logins (see the module doc).
BROWSER_KEY = "login_browser_key"
# LoginFailed reasons grouped by what the person can do about them; each group has a page.
FAILURE_PAGES = {
    FailureReason.AUTHN_FAILED: "cancelled",
    FailureReason.REQUEST_DENIED: "denied",
    FailureReason.UNKNOWN_PRINCIPAL: "denied",
    FailureReason.INSUFFICIENT_LOA: "loa",
    FailureReason.NODE_UNREACHABLE: "unavailable",
    FailureReason.NODE_ERROR: "unavailable",
    FailureReason.EXPIRED: "expired",
    FailureReason.REPLAY: "replay",
    FailureReason.INVALID_PESEL: "data",
    FailureReason.MISSING_ATTRIBUTE: "data",
    FailureReason.INVALID_ATTRIBUTE: "data",
}


@dataclass
class LoginThroughNode:
    """The SP library and its settings, built once per application."""

    provider: ServiceProvider
    wk: WkSettings

    @classmethod
    def build(cls, services: Services) -> LoginThroughNode:
        provider = services.service_provider
        return cls(provider, provider.settings)

    @property
    def sso_url(self) -> str:
        return self.wk.sso_url

    def register(self, app: Flask) -> None:
        """Serve the ACS and metadata where the SP's settings publish them (and /saml/…)."""
        # The node's browser POST is cross-site and carries no CSRF token of ours; what makes
        # it safe is the single-use RelayState and the artifact resolved over a signed channel.
        app.extensions["csrf"].exempt(acs)
        for path in {urlsplit(self.wk.acs_url).path, "/saml/acs"}:
            app.add_url_rule(path, "auth.acs", acs, methods=["GET", "POST"])
        for path in {_local_path(self.wk.sp_entity_id) or "/wk/metadata", "/saml/metadata"}:
            app.add_url_rule(path, "auth.metadata", metadata, methods=["GET"])


def _local_path(url: str) -> str | None:
    parts = urlsplit(url)
    return parts.path if parts.scheme in {"http", "https"} and parts.path else None


def _login() -> LoginThroughNode:
    return current_app.extensions["ueoz.login"]


@blueprint.get("/login")
def login() -> str | tuple[str, int]:
    """Check the domain system and its return address, then send the browser to the node.

    Without ``system`` (the service's own start page, opened directly) the migration has
    nowhere to send the person back to: it ends on its own done screen, rather than in
    whichever system happens to be configured first.
    """
    system_id = request.args.get("system") or None
    return_url = request.args.get("return") or None
    system = None
    if system_id is not None or return_url is not None:
        system = services().settings.domain_systems.get(system_id or "")
        if system is None:
            log.info("login.refused", reason="unknown_system", system=system_id)
            return render_template("login/refused.html", reason="system"), 400
        return_url = return_url or system.default_return_url
        if return_url not in system.return_urls:
            log.info("login.refused", reason="unregistered_return_url", system=system.id)
            return render_template("login/refused.html", reason="return_url", system=system), 400

    logins = services().pending_logins
    relay_state = logins.new_relay_state()
    form = _login().provider.authn_request(relay_state)
    destination = Destination(
        domain_system=system.id if system else None,
        return_url=return_url,
        language=current_language(),
    )
    logins.open(
        relay_state, form.request_id, destination, browser_key_hash=_browser_key_hash(create=True)
    )
    log.info(
        "login.sent_to_node", system=system.id if system else None, saml_request_id=form.request_id
    )
    return render_template("login/to_node.html", form=form)


def acs() -> Response | tuple[str, int]:
    """Take the artifact back from the node, resolve it and start (or resume) the attempt."""
    values = request.form if request.method == "POST" else request.args
    artifact, relay_state = values.get("SAMLart", ""), values.get("RelayState", "")
    logins = services().pending_logins
    pending = logins.take(relay_state, _browser_key_hash(create=False))
    if pending is None:
        standing = logins.standing(relay_state)
        if standing is Standing.EXPIRED:
            # Back after PENDING_LOGIN_TTL: too late for this request, whoever started it.
            log.info("login.failed", reason="pending_login_expired")
            return render_template("login/failed.html", kind="expired"), 400
        waiting = standing is Standing.WAITING
        if waiting and not values.get("from_this_site"):
            # Waiting, but not for this request's session: most likely the node's cross-site
            # POST, which came without our cookie. Once more from this site, and the cookie
            # comes along. Nothing is written to the session here, or its cookie would
            # replace the one the browser has.
            return render_template(
                "login/back_from_node.html", saml_art=artifact, relay_state=relay_state
            )
        # Started in another browser (login CSRF), or nothing waiting at all: a reload, an
        # old tab, another site sending the browser here. Nothing was started in this
        # session, so nothing is undone: a migration under way in it stays as it is.
        log.info("login.failed", reason="other_browser" if waiting else "unknown_relay_state")
        return render_template("login/failed.html", kind="stale"), 400
    if pending.language:
        session["language"] = pending.language
    again = start_again_args(pending.domain_system, pending.return_url)
    if not artifact:
        log.info("login.failed", reason="no_artifact")
        return _failure_page("data", again)
    try:
        identity = _login().provider.resolve(artifact, pending.request_id)
    except LoginFailed as failure:
        log.info("login.failed", reason=str(failure.reason), detail=failure.detail)
        return _failure_page(FAILURE_PAGES.get(failure.reason, "technical"), again)

    person = Person(
        given_names=identity.given_names,
        family_name=identity.family_name,
        date_of_birth=identity.date_of_birth,
        pesel=identity.pesel,
    )
    attempt = services().journey.start(
        person,
        actor=user(),
        domain_system=pending.domain_system,
        return_url=pending.return_url,
        language=pending.language or current_language(),
    )
    # A new session id at the moment of login: a session fixed before it is worth nothing.
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    session[ATTEMPT_KEY] = attempt.id
    session["name_id"] = identity.name_id
    session["session_index"] = identity.session_index
    session["language"] = pending.language or current_language()
    log.info("login.succeeded", attempt=attempt.id, pesel=mask_pesel(identity.pesel))
    return redirect(url_for("migration.show"), 303)


def metadata() -> Response:
    """The service's signed SAML metadata, for the node's operator."""
    return Response(_login().provider.metadata_xml(), mimetype="application/samlmetadata+xml")


@blueprint.post("/logout")
def logout() -> Response:
    """End the session at the node (when there is one) and here, then back to the start."""
    name_id, session_index = session.get("name_id"), session.get("session_index")
    if name_id and session_index:
        try:
            _login().provider.logout_request(name_id, session_index)
        except LoginFailed as failure:
            # The local session ends anyway; the node's expires on its own.
            log.info("logout.node_refused", reason=str(failure.reason), detail=failure.detail)
    # A new id for what is left (the language, the message): the old row goes, and a request
    # of the old session still running can only update a row that is no longer there.
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    _keep_only_language()
    flash(_("Wylogowano."), "info")
    return redirect(url_for("pages.start"), 303)


def _browser_key_hash(*, create: bool) -> str | None:
    key = session.get(BROWSER_KEY)
    if key is None and create:
        key = session[BROWSER_KEY] = secrets.token_urlsafe(24)
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def _failure_page(kind: str, again: dict[str, str]) -> tuple[str, int]:
    """Show why the login failed; leave no half-made session behind.

    ``again``: the start page's parameters for the domain system the login was for.
    """
    _keep_only_language()
    return render_template("login/failed.html", kind=kind, again=again), 403


def _keep_only_language() -> None:
    """Empty the session but for the pages' language: the person still reads their own."""
    language = session.get("language")
    session.clear()
    if language:
        session["language"] = language
