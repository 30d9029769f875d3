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
from urllib.parse import parse_qs, urlsplit

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
from ..adapters.wk import FailureReason, Identity, LoginFailed, ServiceProvider, WkSettings
from ..bootstrap import Services
from ..domain.identity import Person
from ..domain.privacy import mask_pesel
from ..metrics import LOGIN_FAILURES
from ..oidc.authorizations import Waiting
from ..oidc.claims import asked_level, rank
from ..oidc.provider import LogInFirst
from . import console
from .common import (
    ATTEMPT_KEY,
    AUTHORIZATION_KEY,
    SSO_KEY,
    clear_session,
    services,
    user,
    waiting_client,
)
from .i18n import current_language

log = structlog.get_logger(__name__)
blueprint = Blueprint("auth", __name__)

#: The session's key naming this browser to its pending logins (see the module doc).
BROWSER_KEY = "login_browser_key"
# LoginFailed reasons grouped by what the person can do about them; each group has a page.
FAILURE_PAGES = {
    FailureReason.AUTHN_FAILED: "cancelled",
    FailureReason.REQUEST_DENIED: "denied",
    FailureReason.UNKNOWN_PRINCIPAL: "unknown_principal",
    FailureReason.REQUESTER: "requester",
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
def login() -> str:
    """Send the browser to the node; for the domain system waiting for the person, if any.

    Without one (the service's own start page, opened directly) the migration has no domain
    system to send the person back to: it ends on its own done screen.
    """
    provider = services().provider
    waiting = provider.authorizations.get(session.get(AUTHORIZATION_KEY))
    client = provider.client_of(waiting)
    if waiting is None or client is None:
        session.pop(AUTHORIZATION_KEY, None)
        return send_to_node(None)
    return send_to_node(LogInFirst(waiting.id, client, _asked_level(waiting), None))


def send_to_node(login_for: LogInFirst | None, *, purpose: str | None = None) -> str:
    """Record a pending login and post the signed AuthnRequest to the node.

    ``login_for``: the domain system's request the login serves (web/oidc.py), if any.
    ``purpose``: ``console`` for a staff member's login to the console (web/console.py).
    """
    logins = services().pending_logins
    relay_state = logins.new_relay_state()
    form = _login().provider.authn_request(
        relay_state, loa_uri=login_for.level if login_for else None
    )
    destination = Destination(
        domain_system=login_for.client.id if login_for else None,
        language=current_language(),
        authorization_id=login_for.authorization_id if login_for else None,
        loa=login_for.level if login_for else None,
        purpose=purpose,
    )
    logins.open(
        relay_state, form.request_id, destination, browser_key_hash=_browser_key_hash(create=True)
    )
    log.info(
        "login.sent_to_node",
        client=destination.domain_system,
        saml_request_id=form.request_id,
        **({"purpose": purpose} if purpose else {}),
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
            _failed("pending_login_expired")
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
        _failed("other_browser" if waiting else "unknown_relay_state")
        return render_template("login/failed.html", kind="stale"), 400
    if pending.language:
        session["language"] = pending.language
    if not artifact:
        _failed("no_artifact")
        return _failure_page("data")
    try:
        identity = _login().provider.resolve(artifact, pending.request_id)
    except LoginFailed as failure:
        _failed(str(failure.reason), detail=failure.detail)
        return _failure_page(FAILURE_PAGES.get(failure.reason, "technical"))
    if pending.loa is not None and rank(identity.loa) < rank(pending.loa):
        # The node was asked for this level at least (send_to_node): it answered less.
        _failed("insufficient_loa_for_domain_system", loa=identity.loa)
        return _failure_page("loa")

    if pending.purpose == console.PURPOSE:
        # A staff member signing in to the console: no attempt, no single sign-on.
        return console.signed_in(identity)

    person = Person(
        given_names=identity.given_names,
        family_name=identity.family_name,
        date_of_birth=identity.date_of_birth,
        pesel=identity.pesel,
    )
    language = pending.language or current_language()
    attempt = services().journey.start(
        person, actor=user(), domain_system=pending.domain_system, language=language
    )
    sso_id = _single_sign_on(attempt.pesel_hash, identity)
    # A new session at the moment of login, with nothing of the old one but the language: a
    # session fixed before it, and any CSRF token minted in it, are worth nothing.
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    session.clear()
    session["language"] = language
    session[ATTEMPT_KEY] = attempt.id
    session[SSO_KEY] = sso_id
    if pending.authorization_id is not None:
        session[AUTHORIZATION_KEY] = pending.authorization_id
    log.info("login.succeeded", attempt=attempt.id, pesel=mask_pesel(identity.pesel))
    if attempt.state == "skipped" and pending.authorization_id is not None:
        # Migrated already: straight back to the domain system, signed in.
        return redirect(url_for("oidc.to_domain_system"), 303)
    return redirect(url_for("migration.show"), 303)


def _single_sign_on(pesel_hash: str, identity: Identity) -> str:
    """The browser's SSO session after this login: its own again if the same person logged
    in anew (prompt=login, max_age), so the domain systems signed in stay one session; else
    a new one, the old one (someone else's) ended and its domain systems told."""
    provider = services().provider
    current = provider.sso.live(session.get(SSO_KEY))
    if current is not None and current.pesel_hash == pesel_hash:
        provider.sso.renew(
            current.id,
            acr=identity.loa,
            name_id=identity.name_id,
            session_index=identity.session_index,
        )
        return current.id
    if current is not None:
        end_single_sign_on(current.id)
    return provider.sso.open(
        pesel_hash=pesel_hash,
        acr=identity.loa,
        name_id=identity.name_id,
        session_index=identity.session_index,
    )


def _asked_level(waiting: Waiting) -> str | None:
    """The level of assurance the waiting request asked for (``acr_values``), if any."""
    return asked_level(parse_qs(waiting.query).get("acr_values", [None])[0])


def metadata() -> Response:
    """The service's signed SAML metadata, for the node's operator."""
    return Response(_login().provider.metadata_xml(), mimetype="application/samlmetadata+xml")


@blueprint.post("/logout")
def logout() -> Response:
    """End the UEOZ session (every domain system is told) and the node's, then back home."""
    sso_id = session.get(SSO_KEY)
    if sso_id:
        end_single_sign_on(sso_id)
    # A new id for what is left (the language, the message): the old row goes, and a request
    # of the old session still running can only update a row that is no longer there.
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    language = session.get("language")
    session.clear()
    if language:
        session["language"] = language
    flash(_("Wylogowano."), "info")
    return redirect(url_for("pages.start"), 303)


def end_single_sign_on(sso_id: str, *, initiator: str | None = None) -> None:
    """End an SSO session here (its domain systems but ``initiator`` are told) and at the node."""
    ended = services().provider.end_session(sso_id, initiator=initiator)
    if ended is None:
        return
    try:
        _login().provider.logout_request(ended.name_id, ended.session_index)
    except LoginFailed as failure:
        # The session here is over anyway; the node's expires on its own.
        log.info("logout.node_refused", reason=str(failure.reason), detail=failure.detail)


def _failed(reason: str, **fields: str) -> None:
    """Log a login that ended without an identity, and count it by its reason."""
    log.info("login.failed", reason=reason, **fields)
    LOGIN_FAILURES.labels(reason).inc()


def _browser_key_hash(*, create: bool) -> str | None:
    key = session.get(BROWSER_KEY)
    if key is None and create:
        key = session[BROWSER_KEY] = secrets.token_urlsafe(24)
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def _failure_page(kind: str) -> tuple[str, int]:
    """Show why the login failed; leave no half-made session behind."""
    clear_session()
    return render_template("login/failed.html", kind=kind, returning_to=waiting_client()), 403
