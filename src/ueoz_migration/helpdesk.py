"""The helpdesk's look-up: from an event number and the last three PESEL digits to the attempt.

A caller gives the helpdesk the event number from their error screen (``MIGRATION_`` and 12
digits) and the last three digits of their PESEL. The attempt is shown only when both agree;
an unknown number and wrong digits get the same answer, so the look-up cannot be used to learn
which event numbers exist.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session, sessionmaker

from .audit.log import EVENT_NUMBER, find_attempt, format_time, log_table, read_log
from .config import DomainSystem
from .db.models import Attempt, TransitionLogEntry
from .domain.codes import EventCode
from .domain.privacy import mask_pesel

log = structlog.get_logger(__name__)

PESEL_LAST3 = re.compile(r"\d{3}")
NO_MATCH = "No attempt matches this event number and these PESEL digits."


class LookupInputError(ValueError):
    """The event number or the PESEL digits are not in the form the helpdesk receives them."""


@dataclass(frozen=True)
class HelpdeskView:
    """What the helpdesk may see of one attempt."""

    attempt: Attempt
    log: list[TransitionLogEntry]


def normalized_event_number(value: str) -> str:
    """Accept the number as a caller may dictate it (any case, spaces); raise if it is not one."""
    number = re.sub(r"\s+", "", value).upper()
    if not EVENT_NUMBER.fullmatch(number):
        raise LookupInputError(
            f"{value!r} is not an event number: it reads MIGRATION_ and 12 digits, "
            "e.g. MIGRATION_000000000042."
        )
    return number


def lookup(
    sessions: sessionmaker[Session], event_number: str, pesel_last3: str
) -> HelpdeskView | None:
    """Return the attempt with this event number if its PESEL ends in ``pesel_last3``."""
    number = normalized_event_number(event_number)
    digits = pesel_last3.strip()
    if not PESEL_LAST3.fullmatch(digits):
        raise LookupInputError("--pesel-last3 takes exactly three digits, e.g. 247.")
    with sessions() as session:
        attempt = find_attempt(session, number)
        matched = attempt is not None and hmac.compare_digest(
            attempt.pesel[-3:].encode(), digits.encode()
        )
        if not matched or attempt is None:
            log.info("helpdesk.lookup", event_number=number, matched=False)
            return None
        view = HelpdeskView(attempt, read_log(session, attempt.id))
    log.info(
        "helpdesk.lookup",
        event_number=number,
        matched=True,
        attempt=attempt.id,
        pesel=mask_pesel(attempt.pesel),
        state=attempt.state,
    )
    return view


def describe(view: HelpdeskView, systems: dict[str, DomainSystem]) -> str:
    """Render the attempt for the helpdesk: who, where it stands, why, and its log."""
    attempt = view.attempt
    code = _code(attempt.event_code)
    system = systems.get(attempt.domain_system or "")
    facts = [
        ("event number", attempt.event_number or "-"),
        ("event code", code),
        ("state", attempt.state),
        ("name", f"{attempt.given_names} {attempt.family_name}"),
        ("PESEL", mask_pesel(attempt.pesel)),
        ("created", format_time(attempt.created_at)),
        ("updated", format_time(attempt.updated_at)),
        (
            "domain system",
            f"{system.name} ({system.id})" if system else (attempt.domain_system or "-"),
        ),
        ("attempt", attempt.id),
    ]
    width = max(len(label) for label, _ in facts)
    lines = [f"{label.ljust(width)}  {value}" for label, value in facts]
    return "\n".join([*lines, "", "log:", log_table(view.log)])


def _code(value: int | None) -> str:
    if value is None:
        return "-"
    try:
        return f"{value}: {EventCode(value).meaning}"
    except ValueError:
        return f"{value}: (unknown code)"
