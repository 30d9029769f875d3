"""What every blueprint needs: the services, the acting user, the attempt in the session."""

from __future__ import annotations

from flask import current_app, session
from sqlalchemy import bindparam, select

from ..bootstrap import Services
from ..config import DomainSystem
from ..db.engine import READ_ONLY
from ..db.models import Attempt
from ..journey import Actor, AttemptNotFound
from .security import current_request_id

ATTEMPT_KEY = "attempt_id"


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


def domain_system(system_id: str | None) -> DomainSystem | None:
    if not system_id:
        return None
    return services().settings.domain_systems.get(system_id)


def return_url_for(attempt: Attempt) -> str | None:
    """Where the person goes after the migration: the address they came from, if registered.

    The address was checked against the system's list at login; it is checked again here so
    that a configuration change never turns an old attempt into an open redirect.
    """
    system = domain_system(attempt.domain_system)
    if system is None:
        return None
    if attempt.return_url in system.return_urls:
        return attempt.return_url
    return system.default_return_url


def start_again_args(system_id: str | None, return_url: str | None) -> dict[str, str]:
    """The start page's parameters that log in again for the same domain system, if any.

    Whoever has to log in again (a login cancelled at the node, an attempt ended, a link too
    old) goes back to the system they came from afterwards, as on the first try.
    """
    if domain_system(system_id) is None:
        return {}
    assert system_id is not None
    return {"system": system_id, **({"return": return_url} if return_url else {})}


def start_again_args_for(attempt: Attempt) -> dict[str, str]:
    """:func:`start_again_args` for the domain system an attempt came from."""
    return start_again_args(attempt.domain_system, return_url_for(attempt))
