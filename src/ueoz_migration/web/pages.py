"""The start screen, the footer's pages, the language switch, health checks, dev pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, abort, jsonify, redirect, render_template, request, session
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from ..adapters.maildir import maildir_messages
from ..db.schema import alembic_config
from ..domain.privacy import mask_email
from .common import ATTEMPT_KEY, SSO_KEY, attempt_in_session, services, waiting_client
from .i18n import LANGUAGES, current_language, safe_next
from .migration import flows_not_served

blueprint = Blueprint("pages", __name__)
development = Blueprint("development", __name__)


def layout_context() -> dict[str, Any]:
    """What the layout needs on every page: the language, the logout button, the helpdesk."""
    settings = services().settings
    return {
        "current_language": current_language(),
        "logged_in": bool(session.get(SSO_KEY) or session.get(ATTEMPT_KEY)),
        # "Migracja konta" only leads somewhere while the session holds an attempt (not after
        # Anuluj, nor for a person already migrated, who was sent on).
        "has_attempt": bool(session.get(ATTEMPT_KEY)),
        "helpdesk_phone": settings.helpdesk_phone,
        "helpdesk_email": settings.helpdesk_email,
    }


@blueprint.get("/")
def start() -> str:
    """The start screen: log in through login.gov.pl (for the domain system waiting, if any)."""
    attempt = attempt_in_session()
    migrating = attempt is not None and attempt.open_pesel_key is not None
    return render_template("start.html", migrating=migrating, returning_to=waiting_client())


@blueprint.get("/jezyk/<language>")
def language(language: str) -> Response:
    """Switch the pages to ``language``, then go back.

    A link any page may carry, so a GET another site can make too: it changes this browser's
    pages only. The attempt's e-mail follows the language with the next e-mail the person
    asks for (a form, under CSRF protection: see ``migration.fire``).
    """
    if language not in LANGUAGES:
        abort(404)
    session["language"] = language
    return redirect(safe_next(request.args.get("next")))


@blueprint.get("/czym-jest-ueoz")
def about() -> str:
    return render_template("pages/about.html")


@blueprint.get("/pomoc")
def help() -> str:
    return render_template("pages/help.html")


@blueprint.get("/warunki-korzystania")
def terms() -> str:
    return render_template("pages/terms.html")


@blueprint.get("/polityka-prywatnosci")
def privacy() -> str:
    return render_template("pages/privacy.html")


@blueprint.get("/deklaracja-dostepnosci")
def accessibility() -> str:
    return render_template("pages/accessibility.html")


@blueprint.get("/mapa-strony")
def sitemap() -> str:
    return render_template("pages/sitemap.html")


@blueprint.get("/kontakt")
def contact() -> str:
    return render_template("pages/contact.html")


@blueprint.get("/logowanie-login-gov-pl")
def about_login() -> str:
    return render_template("pages/about_login.html")


@blueprint.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The database answers and its schema is the one this code expects, or a newer one.

    The body also lists the flow versions of open attempts that this code cannot run.

    A release upgrades the schema before its code rolls out, and every migration keeps the
    previous release's code working (docs/operations.md, "Releasing"). So a revision this
    code does not know is a newer release's, and the instance stays ready until it is
    replaced; a known revision short of the head means the upgrade has not run yet.
    """
    engine = services().engine
    scripts = ScriptDirectory.from_config(alembic_config(engine))
    expected = set(scripts.get_heads())
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError:
        return jsonify(status="unavailable", database="unreachable"), 503
    ready: dict[str, object] = {"status": "ok"}
    if current != expected:
        known = {revision.revision for revision in scripts.walk_revisions()}
        if not current or current <= known:
            return jsonify(status="unavailable", database="schema not at head"), 503
        ready["database"] = "schema of a newer release"
    # The flow versions of open attempts this code cannot run. Said, not failed on: every
    # other attempt is served, and a whole fleet made unready by one old version would serve
    # no one. A release is gated before it rolls out by `ueoz-migration flows check`.
    try:
        unserved = flows_not_served(services().journey)
    except SQLAlchemyError:
        return jsonify(status="unavailable", database="unreachable"), 503
    if unserved:
        ready["flows_not_runnable"] = unserved
    return jsonify(ready), 200


# -- development only (never registered in production) -------------------------------------

LINK = re.compile(r"https?://\S+/weryfikacja/\S+")


@development.get("/dev/mail")
def dev_mail() -> str:
    """List the messages the Maildir backend delivered, newest first."""
    path = services().settings.maildir_path
    messages = []
    for mail in maildir_messages(path):
        link = LINK.search(mail.body)
        messages.append(
            {
                "subject": mail.subject,
                "to": mask_email(parseaddr(mail.recipient)[1]),
                "at": _utc(mail.date),
                "link": link.group(0) if link else None,
            }
        )
    return render_template("dev/mail.html", messages=messages, maildir=path)


def _utc(date_header: str) -> datetime | None:
    try:
        return parsedate_to_datetime(date_header).astimezone(UTC)
    except (TypeError, ValueError):
        return None
