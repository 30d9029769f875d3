"""What every blueprint needs: the services, the acting user, what the session holds."""

from __future__ import annotations

from flask import current_app, session
from sqlalchemy import bindparam, select

from ..bootstrap import Services
from ..db.engine import READ_ONLY
from ..db.models import Attempt
from ..journey import Actor, AttemptNotFound
from ..oidc.clients import Client
from .security import current_request_id

# What a browser's session holds: the attempt it works on, its UEOZ single sign-on session
# (oidc/sso.py), and the domain system's authorization request waiting for the person.
ATTEMPT_KEY = "attempt_id"
SSO_KEY = "sso_session"
AUTHORIZATION_KEY = "authorization"


def services() -> Services:
    return current_app.extensions["ueoz.services"]


def user() -> Actor:
    """The person at the browser, in this request."""
    return Actor("user", current_request_id())


def attempt_in_session() -> Attempt | None:
    """Return the attempt this browser works on, or None (none yet, or it vanished)."""
    attempt_id = session.get(ATTEMPT_KEY)
    if not attempt_id:
        return None
    try:
        return services().journey.get(attempt_id)
    except AttemptNotFound:
        session.pop(ATTEMPT_KEY, None)
        return None


def state_in_session() -> str | None:
    """Return the state of the attempt this browser works on: one indexed read, no ORM object.

    The searching page asks this every second or two while the search worker works.
    """
    attempt_id = session.get(ATTEMPT_KEY)
    if not attempt_id:
        return None
    with services().engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})  # a snapshot, as in db.snapshot
        return connection.execute(STATE, {"id": attempt_id}).scalar()


STATE = select(Attempt.state).where(Attempt.id == bindparam("id"))


def domain_system_of(attempt: Attempt) -> Client | None:
    """The registered domain system the person came to the attempt from, if any."""
    return services().clients.get(attempt.domain_system) if attempt.domain_system else None


def waiting_client() -> Client | None:
    """The domain system whose sign-in this browser is in the middle of, if any."""
    provider = services().provider
    return provider.client_of(provider.authorizations.get(session.get(AUTHORIZATION_KEY)))


def clear_session() -> None:
    """Empty the session but for the pages' language and the domain system's waiting request.

    The person still reads their own language, and can still go back to the domain system
    (or log in again for it) from the page they are shown.
    """
    kept = {key: session[key] for key in ("language", AUTHORIZATION_KEY) if key in session}
    session.clear()
    session.update(kept)
