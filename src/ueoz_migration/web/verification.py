"""The link in the verification e-mail: works in any browser, with or without a session."""

from __future__ import annotations

import structlog
from flask import Blueprint, current_app, render_template, session
from werkzeug.wrappers import Response

from ..db.models import Attempt
from ..domain.privacy import shown_email
from ..journey import AttemptNotFound, EventRefused
from .common import ATTEMPT_KEY, domain_system_of, services, user
from .i18n import LANGUAGES, current_language

log = structlog.get_logger(__name__)
blueprint = Blueprint("verification", __name__)

#: The states of an attempt whose address is verified: the account is ready.
VERIFIED_STATES = frozenset({"done", "handed_off"})
# The refusals of ``verify``, each with its own page.
LINK_PAGES = {
    "link_expired": "verification/expired.html",
    "link_used": "verification/used.html",
    "link_retired": "verification/retired.html",
    "link_unknown": "verification/unknown.html",
}


@blueprint.get("/weryfikacja/<token>")
def verify(token: str) -> str | tuple[str, int] | Response:
    """Open the link: one click verifies in the browser that runs the attempt; any other
    client is shown a confirm button (see :func:`confirm`) and nothing is verified yet.

    Mail gateways and link scanners fetch links nobody opened: a GET from them must verify
    no address. The browser holding the attempt in its session is the person's own.
    """
    try:
        attempt, refusal = services().journey.link_standing(token)
    except AttemptNotFound:
        return render_template(LINK_PAGES["link_unknown"]), 404
    if session.get(ATTEMPT_KEY) == attempt.id:
        return _verify(token, attempt.id)
    _speak_as(attempt)
    if refusal is not None:
        # The page the event's refusal would bring, without firing it: nothing is logged.
        return _refused(token, EventRefused(attempt, "verify", refusal, []))
    return render_template(
        "verification/confirm.html", token=token, masked_email=shown_email(attempt.email)
    )


@blueprint.post("/weryfikacja/<token>")
def confirm(token: str) -> str | tuple[str, int] | Response:
    """Verify the address the link was sent to: the confirm button of another browser."""
    try:
        attempt_id = services().journey.attempt_for_link(token)
    except AttemptNotFound:
        return render_template(LINK_PAGES["link_unknown"]), 404
    return _verify(token, attempt_id)


def _verify(token: str, attempt_id: str) -> str | tuple[str, int] | Response:
    """Fire ``verify`` with the link, then show the done screen or why it was refused."""
    try:
        attempt = services().journey.fire(attempt_id, "verify", actor=user(), token=token)
    except EventRefused as refused:
        _speak_as(refused.attempt)
        return _refused(token, refused)
    _remember(attempt_id)
    _speak_as(attempt)
    return render_template(
        "migration/done.html", attempt=attempt, domain_system=domain_system_of(attempt)
    )


@blueprint.post("/weryfikacja/<token>/resend")
def resend(token: str) -> str | tuple[str, int]:
    """Send a fresh link for the attempt an expired link belongs to."""
    journey = services().journey
    try:
        attempt_id = journey.attempt_for_link(token)
    except AttemptNotFound:
        return render_template(LINK_PAGES["link_unknown"]), 404
    try:
        # With the link's token: a link to an address since changed may not ask (the journey
        # refuses it as link_retired, under the attempt's lock).
        attempt = journey.fire(
            attempt_id, "resend", actor=user(), language=current_language(), token=token
        )
    except EventRefused as refused:
        _speak_as(refused.attempt)
        if refused.reason == "resend_limit":
            return render_template("verification/resend_limit.html"), 429
        return _refused(token, refused)
    _speak_as(attempt)
    return render_template(
        "verification/resent.html", masked_email=shown_email(attempt.email or "")
    )


def _refused(token: str, refused: EventRefused) -> tuple[str, int]:
    attempt = refused.attempt
    if attempt.state in VERIFIED_STATES:
        # Verified already (by this link or a newer one): nothing left to do.
        return render_template(
            "verification/used.html", done=True, domain_system=domain_system_of(attempt)
        ), 410
    if refused.reason == "not_allowed":
        # The attempt moved on without this link: address changed, cancelled or expired.
        reason = "link_retired" if attempt.state == "email_entry" else "link_unknown"
        return render_template(
            LINK_PAGES[reason],
            ended=attempt.open_pesel_key is None,
            # "Zmień adres e-mail" was chosen: the link died then, and no new one is sent
            # until the form is completed.
            changing_address=attempt.state == "email_entry",
        ), 410
    template = LINK_PAGES.get(refused.reason, LINK_PAGES["link_unknown"])
    # An expired link offers a new one while the attempt still waits for it; so does a
    # superseded link to the current address (the newer one may have expired too, or never
    # arrived), but not a link to an address since changed (see resend()).
    can_resend = attempt.state == "awaiting_verification" and (
        refused.reason == "link_expired"
        or (
            refused.reason == "link_retired"
            and services().journey.link_is_for_current_address(token)
        )
    )
    return render_template(template, token=token, can_resend=can_resend, done=False), 410


def _speak_as(attempt: Attempt) -> None:
    """Show the link's pages in the language of the migration, in a browser that chose none.

    The link is often opened in another browser (a phone's mail app) than the one the
    migration ran in; the e-mail was written in the migration's language, so are its pages.
    """
    if "language" not in session and attempt.language in LANGUAGES:
        session["language"] = attempt.language


def _remember(attempt_id: str) -> None:
    """Let this browser continue with the attempt the link completed (a new session id)."""
    if session.get(ATTEMPT_KEY) != attempt_id:
        current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
        session[ATTEMPT_KEY] = attempt_id
