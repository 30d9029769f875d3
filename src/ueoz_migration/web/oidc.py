"""The OpenID Provider's endpoints, and the way back to the domain system at the journey's end.

Routes only translate: the provider (``oidc/provider.py``) decides; the journey records the
hand-off. docs/integration.md describes the endpoints for the domain systems' teams.
"""

from __future__ import annotations

import structlog
from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from flask import (
    Blueprint,
    Flask,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.wrappers import Response
from wtforms import ValidationError

from ..db.models import Attempt
from ..journey import EventRefused
from ..oidc.provider import Answered, Refused
from ..oidc.server import (
    AUTHORIZE_PATH,
    DISCOVERY_PATH,
    END_SESSION_PATH,
    JWKS_PATH,
    TOKEN_PATH,
    USERINFO_PATH,
)
from . import auth
from .common import (
    AUTHORIZATION_KEY,
    SSO_KEY,
    attempt_in_session,
    domain_system_of,
    services,
    user,
)

log = structlog.get_logger(__name__)
blueprint = Blueprint("oidc", __name__)

#: How long a domain system may cache the JWKS: shorter than a new key is published before it
#: signs (oidc/keys.py, PUBLISH_AHEAD).
JWKS_MAX_AGE = 300
#: The states from which the person is handed back to the domain system, signed in.
HAND_OFF_STATES = frozenset({"done", "skipped"})


def install(app: Flask) -> None:
    """Register the endpoints; those the domain systems call carry no CSRF token of ours."""
    app.register_blueprint(blueprint)
    csrf = app.extensions["csrf"]
    for view in (authorize, token, userinfo, end_session):
        csrf.exempt(view)


@blueprint.get(DISCOVERY_PATH)
def configuration() -> Response:
    return _public(jsonify(services().provider.metadata()), max_age=3600)


@blueprint.get(JWKS_PATH)
def jwks() -> Response:
    return _public(jsonify(services().signing_keys.public_jwks()), max_age=JWKS_MAX_AGE)


@blueprint.route(AUTHORIZE_PATH, methods=["GET", "POST"])
def authorize() -> Response | str | tuple[str, int]:
    """A domain system's sign-in: answered at once, or after the node login (and migration)."""
    provider = services().provider
    try:
        decided = provider.authorize(session.get(SSO_KEY))
    except Refused as refused:
        # No address it is safe to send the answer to: a page here (no open redirect).
        return render_template("login/refused.html", reason=refused.reason), 400
    if isinstance(decided, Answered):
        return decided.response
    session[AUTHORIZATION_KEY] = decided.authorization_id
    if decided.language:
        session["language"] = decided.language
    return auth.send_to_node(decided)


@blueprint.post(TOKEN_PATH)
def token() -> Response:
    return services().provider.token_response()


@blueprint.route(USERINFO_PATH, methods=["GET", "POST"])
def userinfo() -> Response:
    return services().provider.userinfo_response()


@blueprint.route(END_SESSION_PATH, methods=["GET", "POST"])
def end_session() -> Response | str | tuple[str, int]:
    """RP-Initiated Logout: end the UEOZ session (and the node's), tell the other systems."""
    provider = services().provider
    try:
        asked = provider.end_session_request()
    except OAuth2Error as error:
        # OpenID Connect RP-Initiated Logout 4: no redirect after an error.
        log.info("oidc.logout_refused", error=error.error, reason=error.description)
        return render_template("oidc/logout_refused.html"), 400
    if asked.needs_confirmation and not _confirmed():
        # Without an id_token_hint anyone could log the person out: they say so themselves.
        return render_template("oidc/logout_confirm.html", client=asked.client)
    hint = asked.id_token_claims or {}
    sso_id = provider.sso.id_for_sid(hint["sid"]) if isinstance(hint.get("sid"), str) else None
    sso_id = sso_id or session.get(SSO_KEY)
    if sso_id:
        auth.end_single_sign_on(sso_id, initiator=asked.client.id if asked.client else None)
    if session.get(SSO_KEY) in (None, sso_id):
        language = session.get("language")
        session.clear()
        if language:
            session["language"] = language
    if asked.redirect_uri:
        return redirect(asked.redirect_uri)
    flash(_("Wylogowano."), "info")
    return redirect(url_for("pages.start"), 303)


def _confirmed() -> bool:
    """The person pressed Wyloguj on the confirmation page (a form of ours, CSRF-checked)."""
    if request.method != "POST" or request.form.get("confirm") != "1":
        return False
    try:
        validate_csrf(request.form.get("csrf_token"))
    except (ValidationError, CSRFError):
        return False
    return True


@blueprint.get("/przejdz-do-systemu")
def to_domain_system() -> Response | str | tuple[str, int]:
    """**Przejdź do systemu dziedzinowego**: back to the domain system, signed in.

    In the browser that brought the domain system's request: its answer, a code (or, after
    **Anuluj**, ``access_denied``), and the attempt's hand-off row. Anywhere else (the link
    opened in another browser, a second click, a request too old): the domain system's own
    sign-in start, which comes back here and, through the node login, is answered at once.
    """
    provider = services().provider
    attempt = attempt_in_session()
    if attempt is not None and attempt.open_pesel_key is not None:
        return redirect(url_for("migration.show"))  # not there yet
    authorization_id = session.pop(AUTHORIZATION_KEY, None)
    taken = provider.authorizations.take(authorization_id) if authorization_id else None
    if taken is None:
        return _start_at_domain_system(attempt)
    person = provider.sso.signed_in(session.get(SSO_KEY))
    if person is None and attempt is not None and attempt.state != "cancelled":
        # Migrated, but no longer signed in here (the session ended): sign in anew.
        return _start_at_domain_system(attempt)
    try:
        answered = provider.complete(taken, person)
    except Refused as refused:
        return render_template("login/refused.html", reason=refused.reason), 400
    if answered.outcome == "code" and attempt is not None and attempt.state in HAND_OFF_STATES:
        _hand_off(attempt, answered.client_id)
    # The session keeps the attempt: another click here, or a tab left open, leads to the
    # domain system's own sign-in start.
    return answered.response


def _hand_off(attempt: Attempt, client_id: str) -> None:
    """Record in the attempt's log which domain system received the person (no code)."""
    try:
        services().journey.fire(attempt.id, "hand_off", actor=user(), client=client_id)
    except EventRefused as refused:
        # Handed off already (another tab took the same way a moment ago).
        log.info("oidc.hand_off_refused", attempt=attempt.id, reason=refused.reason)


def _start_at_domain_system(attempt: Attempt | None) -> Response:
    """Send the person to the domain system's own sign-in start (OpenID Connect Core 4)."""
    client = domain_system_of(attempt) if attempt is not None else None
    if client is None or not client.initiate_login_uri:
        flash(
            _("Konto UEOZ jest gotowe. Zaloguj się do systemu dziedzinowego przez login.gov.pl."),
            "info",
        )
        return redirect(url_for("pages.start"))
    log.info("oidc.sent_to_initiate_login", client=client.id)
    return redirect(
        add_params_to_uri(client.initiate_login_uri, {"iss": services().provider.issuer})
    )


def _public(response: Response, *, max_age: int) -> Response:
    """A document any domain system (or its browser code) may read and cache a while."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response
