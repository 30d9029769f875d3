"""The helpdesk's look-up: from an event number and the last three PESEL digits to the attempt.

The attempt is shown only when both agree, and an unknown number and wrong digits get the
same answer, so the look-up cannot tell which event numbers exist. What it shows, no PESEL or
address whole: docs/event-codes.md, "What the helpdesk sees".
"""

from __future__ import annotations

import hmac
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .audit.log import (
    find_attempt,
    log_table,
    number_and_code,
    read_log,
    text_table,
)
from .audit.log import format_time as format_utc
from .db.engine import snapshot
from .db.models import (
    EPLOZ_REMOVED,
    Attempt,
    EplozAccount,
    TransitionLogEntry,
    UeozAccount,
)
from .db.outbox import latest_link_mail
from .domain.codes import EventCode
from .domain.event_numbers import NotAnEventNumber, normalize_event_number
from .domain.matching import first_name_agrees, last_name_agrees
from .domain.privacy import mask_email, mask_pesel

log = structlog.get_logger(__name__)

PESEL_LAST3 = re.compile(r"\d{3}")
NO_MATCH = "No attempt matches this event number and these PESEL digits."
REMOVED_NOTE = "removed from e-PLOZ by a full import"
PURGED = (
    "purged (RETENTION_DAYS after the attempt ended: names, date of birth, PESEL but its "
    "last 3 digits, e-mail addresses; the log below is whole) at"
)
PURGED_PESEL = "the attempt's personal data was purged, its PESEL with it"
LATER_SHOWN = 20  # later attempts listed; the rest are counted
WIDTH = 96  # the output wraps here, to read from a terminal during a call
#: The callers' clock: what they remember and are told is Polish time; the log's is UTC.
POLISH_TIME = ZoneInfo("Europe/Warsaw")
#: Where an attempt is once the person chose Dalej on the error screen (states/error.py).
AFTER_DALEJ = frozenset({"email_entry", "awaiting_verification", "done", "handed_off"})


class LookupInputError(ValueError):
    """The event number or the PESEL digits are not in the form the helpdesk receives them."""


@dataclass(frozen=True)
class UeozHolder:
    """The UEOZ account an e-PLOZ account migrated to."""

    id: int
    own: bool  # the same person (PESEL hash) as the attempt's
    given_names: str
    family_name: str
    pesel: str
    email: str
    created_at: datetime
    verified_at: datetime | None


@dataclass(frozen=True)
class EplozEntry:
    """An e-PLOZ account registered under the attempt's PESEL, as the table holds it now."""

    login: str
    first_name: str
    last_name: str
    email: str
    status: str
    taken_by_attempt: bool  # the account this attempt found and carries
    holder: UeozHolder | None

    @property
    def removed(self) -> bool:
        """Gone from e-PLOZ (``eploz import --full``): kept for the attempts that found it."""
        return self.status == EPLOZ_REMOVED


@dataclass(frozen=True)
class LaterAttempt:
    """An attempt of the same person started after the one looked up."""

    id: str
    state: str
    created_at: datetime
    event_number: str | None
    event_code: int | None


@dataclass(frozen=True)
class LinkMail:
    """The attempt's latest verification e-mail, as the outbox holds it."""

    recipient: str
    created_at: datetime
    tries: int
    sent_at: datetime | None
    failed_at: datetime | None
    withdrawn_at: datetime | None
    last_error: str  # codes and reasons only (adapters/smtp.py, workers/outbox.py), no address


@dataclass(frozen=True)
class HelpdeskView:
    """What the helpdesk may see of one attempt."""

    attempt: Attempt
    log: list[TransitionLogEntry]
    eploz: list[EplozEntry]
    later: list[LaterAttempt]
    later_total: int
    now: datetime
    link_mail: LinkMail | None = None


def lookup(
    sessions: sessionmaker[Session],
    event_number: str,
    pesel_last3: str,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> HelpdeskView | None:
    """Return the attempt with this event number if its PESEL ends in ``pesel_last3``."""
    try:
        number = normalize_event_number(event_number)
    except NotAnEventNumber as error:
        raise LookupInputError(str(error)) from None
    digits = pesel_last3.strip()
    if not PESEL_LAST3.fullmatch(digits):
        raise LookupInputError("--pesel-last3 takes exactly three digits, e.g. 247.")
    now = clock()
    with snapshot(sessions) as session:
        attempt = find_attempt(session, number)
        matched = attempt is not None and hmac.compare_digest(
            attempt.pesel[-3:].encode(), digits.encode()
        )
        if not matched or attempt is None:
            log.info("helpdesk.lookup", event_number=number, matched=False)
            return None
        view = _view(session, attempt, now)
    log.info(
        "helpdesk.lookup",
        event_number=number,
        matched=True,
        attempt=attempt.id,
        pesel=mask_pesel(attempt.pesel),
        state=attempt.state,
    )
    return view


def view_of(sessions: sessionmaker[Session], attempt_id: str, now: datetime) -> HelpdeskView | None:
    """Return what the helpdesk sees of an attempt it has already looked up, or None.

    For the console, which shows an attempt again (after an action) only to a staff member
    who matched its event number and digits in this console session.
    """
    with snapshot(sessions) as session:
        attempt = session.get(Attempt, attempt_id)
        return None if attempt is None else _view(session, attempt, now)


def _view(session: Session, attempt: Attempt, now: datetime) -> HelpdeskView:
    later, later_total = _later_attempts(session, attempt)
    return HelpdeskView(
        attempt=attempt,
        log=read_log(session, attempt.id),
        # A purged attempt's PESEL is gone but for its last digits: nothing to look up by.
        eploz=[] if attempt.purged_at else _eploz_accounts(session, attempt),
        later=later,
        later_total=later_total,
        now=now,
        link_mail=_link_mail(session, attempt),
    )


def _link_mail(session: Session, attempt: Attempt) -> LinkMail | None:
    """The latest verification e-mail of the attempt: a caller waiting for a link asks."""
    message = latest_link_mail(session, attempt.id)
    if message is None:
        return None
    return LinkMail(
        recipient=message.recipient,
        created_at=message.created_at,
        tries=message.tries,
        sent_at=message.sent_at,
        failed_at=message.failed_at,
        withdrawn_at=message.withdrawn_at,
        last_error=message.last_error,
    )


def link_mail_fact(mail: LinkMail | None) -> str:
    """What became of the link e-mail, its address masked."""
    if mail is None:
        return "-"
    to = mask_email(mail.recipient) if mail.recipient else "an address no longer kept"
    if mail.sent_at is not None:
        return f"sent to {to} at {format_utc_and_polish(mail.sent_at)}"
    if mail.failed_at is not None:
        return (
            f"NOT DELIVERED to {to} ({mail.last_error}) at {format_utc_and_polish(mail.failed_at)}"
            ": the caller checks the address, chooses Zmień adres e-mail and gives a good one"
        )
    if mail.withdrawn_at is not None:
        return f"to {to}, withdrawn before it went out ({mail.last_error})"
    tried = f", {mail.tries} failed tries so far ({mail.last_error})" if mail.tries else ""
    return f"to {to}, waiting to be sent since {format_utc_and_polish(mail.created_at)}{tried}"


def _eploz_accounts(session: Session, attempt: Attempt) -> list[EplozEntry]:
    """Every account under the attempt's PESEL, removed ones included.

    The ones not ``removed`` are what the search would find now (``TableDirectory``'s
    match); a removed one stays in the table only because an ended attempt found it, and
    is shown marked as removed, for that attempt's history.
    """
    rows = session.execute(
        select(EplozAccount, UeozAccount)
        .outerjoin(UeozAccount, UeozAccount.eploz_account_id == EplozAccount.id)
        .where(EplozAccount.pesel == attempt.pesel)
        .order_by(EplozAccount.id)
    ).all()
    return [
        EplozEntry(
            login=account.login,
            first_name=account.first_name,
            last_name=account.last_name,
            email=account.email,
            status=account.status,
            taken_by_attempt=account.id == attempt.eploz_account_id,
            holder=None
            if holder is None
            else UeozHolder(
                id=holder.id,
                own=holder.pesel_hash == attempt.pesel_hash,
                given_names=holder.given_names,
                family_name=holder.family_name,
                pesel=holder.pesel,
                email=holder.email,
                created_at=holder.created_at,
                verified_at=holder.email_verified_at,
            ),
        )
        for account, holder in rows
    ]


def _later_attempts(session: Session, attempt: Attempt) -> tuple[list[LaterAttempt], int]:
    later = (
        Attempt.pesel_hash == attempt.pesel_hash,
        Attempt.created_at > attempt.created_at,
        Attempt.id != attempt.id,
    )
    total = session.scalar(select(func.count()).select_from(Attempt).where(*later)) or 0
    rows = session.scalars(
        select(Attempt).where(*later).order_by(Attempt.created_at, Attempt.id).limit(LATER_SHOWN)
    ).all()
    shown = [
        LaterAttempt(row.id, row.state, row.created_at, row.event_number, row.event_code)
        for row in rows
    ]
    return shown, total


# -- what the helpdesk reads ----------------------------------------------------------------


def describe(view: HelpdeskView, systems: dict[str, str]) -> str:
    """Render the attempt for the helpdesk: why, what to do, where it stands, who, and its log.

    ``systems``: the domain systems' names by their ids (the registered clients).
    """
    attempt = view.attempt
    system = systems.get(attempt.domain_system or "")  # its name
    purged = attempt.purged_at
    facts = [
        ("event number", attempt.event_number or "-"),
        ("event code", code_fact(attempt.event_code)),
        ("what to do", what_to_do(view)),
        ("state", attempt.state),
        ("open", openness(attempt, view.now)),
        *(
            [("personal data", f"{PURGED} {format_utc_and_polish(purged)}")]
            if purged
            else [("name (node)", f"{attempt.given_names} {attempt.family_name}")]
        ),
        ("PESEL", mask_pesel(attempt.pesel)),
        ("created", format_utc_and_polish(attempt.created_at)),
        ("updated", format_utc_and_polish(attempt.updated_at)),
        ("link e-mail", link_mail_fact(view.link_mail)),
        (
            "domain system",
            f"{system} ({attempt.domain_system})" if system else (attempt.domain_system or "-"),
        ),
        ("attempt", attempt.id),
    ]
    return "\n".join(
        [
            *_labelled(facts),
            "",
            *(
                [f"e-PLOZ accounts under this PESEL: not looked up ({PURGED_PESEL})"]
                if purged
                else _eploz_section(view.eploz, attempt)
            ),
            "",
            *_later_section(view.later, view.later_total),
            "",
            "log:",
            log_table(view.log),
        ]
    )


def code_fact(value: int | None) -> str:
    """``208: account found, first and last name both differ``."""
    if value is None:
        return "-"
    try:
        return f"{value}: {EventCode(value).meaning}"
    except ValueError:
        return f"{value}: (unknown code)"


def format_utc_and_polish(value: datetime) -> str:
    """UTC, as the log has it, and the caller's Polish time beside it."""
    polish = value.astimezone(POLISH_TIME)
    day = "" if polish.date() == value.astimezone(UTC).date() else "%Y-%m-%d "
    return f"{format_utc(value)} ({polish.strftime(day + '%H:%M:%S %Z')} Polish time)"


def what_to_do(view: HelpdeskView) -> str:
    """The code's guidance, or, once the caller went on with Dalej, what is left to do."""
    attempt = view.attempt
    if attempt.event_code is None:
        return "-"
    try:
        code = EventCode(attempt.event_code)
    except ValueError:
        return "(unknown code: escalate)"
    if attempt.state not in AFTER_DALEJ or code is EventCode.ALREADY_MIGRATED:
        # 206: the account is another UEOZ account's; escalate, whatever the caller did since.
        return code.guidance
    # Past the error screen, the code's way back (correct e-PLOZ, Anuluj, log in again) is
    # no longer the caller's; and once the new account's address is verified, every login
    # skips the migration (journey.start), so none can bring the e-PLOZ account any more.
    free = [entry.login for entry in view.eploz if not entry.removed and entry.holder is None]
    if free:
        account = f"the e-PLOZ account ({', '.join(free)})"
    elif code is EventCode.NO_ACCOUNT:
        account = "an e-PLOZ account the caller may have under another PESEL"
    else:
        account = "an e-PLOZ account (none free is under this PESEL now)"
    # 207 was an outage: a new search may find the account as e-PLOZ holds it.
    when = "" if code is EventCode.DIRECTORY_UNAVAILABLE else " once e-PLOZ is corrected"
    even = when.replace(" once", ", even once")
    chose = "The caller chose Dalej: a new UEOZ account, made without e-PLOZ data"
    if attempt.state in ("done", "handed_off"):
        advice = (
            f"{chose}, with its e-mail address verified. Every login now skips the migration: "
            f"logging in again will not bring {account}{even}; "
            "its login and roles were not carried over and have to be moved to the UEOZ "
            "account another way."
        )
    elif attempt.state == "awaiting_verification":
        advice = (
            f"{chose}, waits for its e-mail address to be verified; once it is, every login "
            f"skips the migration and will not bring {account}. Until then, to have it taken "
            f"over{when}, the caller chooses Zmień adres e-mail, then Anuluj on the e-mail "
            "form, and logs in again."
        )
    else:
        advice = (
            "The caller chose Dalej, to a new UEOZ account without e-PLOZ data, and is at its "
            f"e-mail form. To have {account} taken over{when}, the caller chooses Anuluj on "
            "that form and logs in again; once the form is sent and the address verified, "
            "every login skips the migration."
        )
    if code is EventCode.NO_ACCOUNT and not free:
        return (
            "If the caller never had an e-PLOZ account, Dalej was the right way on and nothing "
            f"is left to do. If they had one: {advice}"
        )
    return advice


def openness(attempt: Attempt, now: datetime) -> str:
    """Say whether a login now would resume this attempt, and until when it would."""
    again = "a new login starts a new attempt, which searches e-PLOZ again."
    if attempt.open_pesel_key is None:  # every final state clears it (states/finals.py)
        ended = f"no: ended ({attempt.state}) {format_utc_and_polish(attempt.updated_at)}"
        return f"{ended}; {again}" if attempt.state in {"cancelled", "expired"} else ended
    until = format_utc_and_polish(attempt.expires_at)
    if attempt.expires_at <= now:
        return f"no: its time ran out {until} (not yet recorded as expired); {again}"
    if attempt.state == "error":
        return (
            f"yes, until {until}. Until then every login shows this same error screen, "
            "event number and code, even after e-PLOZ is corrected: for a new search the "
            "caller must press Anuluj on the error screen, then log in again."
        )
    return (
        f"yes, until {until}, or later if the caller takes another step; "
        f"a login before then resumes it at {attempt.state}."
    )


def _eploz_section(accounts: Sequence[EplozEntry], attempt: Attempt) -> list[str]:
    removed = sum(account.removed for account in accounts)
    in_directory = len(accounts) - removed
    lines = [
        f"e-PLOZ accounts under this PESEL (the directory now): {in_directory or 'none'}"
        + (f" (and {removed} removed by a full import)" if removed else "")
    ]
    for number, account in enumerate(accounts, start=1):
        first = (
            "agrees"
            if first_name_agrees(account.first_name, attempt.given_names)
            else f"differs from the node's {attempt.given_names}"
        )
        last = (
            "agrees"
            if last_name_agrees(account.last_name, attempt.family_name)
            else f"differs from the node's {attempt.family_name}"
        )
        login = account.login + (
            " (the account this attempt found)" if account.taken_by_attempt else ""
        )
        facts = [
            ("login", login),
            ("first name", f"{account.first_name} ({first})"),
            ("last name", f"{account.last_name} ({last})"),
            (
                "status",
                f"{REMOVED_NOTE} (the search no longer finds it)"
                if account.removed
                else account.status,
            ),
            ("e-mail", mask_email(account.email) if account.email else "-"),
            ("migrated to", _holder(account.holder)),
        ]
        lines.extend(_labelled(facts, indent=f"  {number}. "))
    return lines


def _holder(holder: UeozHolder | None) -> str:
    if holder is None:
        return "no UEOZ account yet"
    verified = (
        f"e-mail verified {format_utc_and_polish(holder.verified_at)}"
        if holder.verified_at
        else "e-mail not verified"
    )
    if not holder.own:
        # Someone else's data is not the caller's to hear, nor the desk's to need: the
        # account's number is what an escalation takes.
        return (
            f"UEOZ account {holder.id}, ANOTHER person's (escalate with this number; "
            "their data is not shown)\n"
            f"created {format_utc_and_polish(holder.created_at)}, {verified}"
        )
    return (
        f"UEOZ account {holder.id}, this person's own: {holder.given_names} "
        f"{holder.family_name}\n"
        f"PESEL {mask_pesel(holder.pesel)}, e-mail {mask_email(holder.email)}\n"
        f"created {format_utc_and_polish(holder.created_at)}, {verified}"
    )


def _later_section(later: Sequence[LaterAttempt], total: int) -> list[str]:
    if not later:
        return ["later attempts of this person: none"]
    rows = [
        (
            row.id,
            row.state,
            format_utc_and_polish(row.created_at),
            number_and_code(row.event_number, row.event_code) or "-",
        )
        for row in later
    ]
    more = f" (the first {len(later)} shown)" if total > len(later) else ""
    header = ("attempt", "state", "created", "event number / code")
    return [
        f"later attempts of this person: {total}{more}",
        *text_table(header, rows, indent="  "),
    ]


def _labelled(facts: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    """``label  value`` lines; a value wraps, and goes on at each newline, under itself.

    ``indent`` leads the first line (``"  1. "``); the others are indented as far.
    """
    width = max(len(label) for label, _ in facts)
    hang = " " * (len(indent) + width + 2)
    lines = []
    for index, (label, value) in enumerate(facts):
        lead = (indent if index == 0 else " " * len(indent)) + label.ljust(width) + "  "
        for part in value.split("\n"):
            lines.append(
                textwrap.fill(
                    part,
                    width=max(WIDTH, len(hang) + 40),
                    initial_indent=lead,
                    subsequent_indent=hang,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
            lead = hang
    return lines
