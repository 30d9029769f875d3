"""What every state's behaviour can reach: the attempt, its transaction, the clock, mail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..db.models import EPLOZ_REMOVED, Attempt, EplozAccount
from ..domain.matching import match_account

# Built once (see journey.py, where the transition's own statements are).
_UNDER_PESEL = (
    select(EplozAccount)
    .where(EplozAccount.pesel == bindparam("pesel"))
    .where(EplozAccount.status != EPLOZ_REMOVED)
)
# In id order, as an import locks the rows it changes (adapters/eploz.py): two transactions
# locking the same rows in different orders deadlock on PostgreSQL.
LOCK_EPLOZ_ACCOUNTS_UNDER_PESEL = _UNDER_PESEL.order_by(EplozAccount.id).with_for_update(read=True)
EPLOZ_ACCOUNTS_UNDER_PESEL = _UNDER_PESEL.execution_options(populate_existing=True)


class Rejected(Exception):
    """A step's check failed: the event is refused with ``reason`` and nothing changes.

    ``fields`` maps form fields to the reasons they are wrong, for the page to show.
    """

    def __init__(self, reason: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields or {}


class MailComposer(Protocol):
    def verification(self, *, attempt: Attempt, link: str, expires_at: datetime) -> tuple[str, str]:
        """Return the subject and plain-text body of the verification e-mail."""


@dataclass(frozen=True)
class Policy:
    """The tunable rules the states apply."""

    attempt_ttl: timedelta
    verification_link_ttl: timedelta
    resend_limit_per_hour: int
    base_url: str


@dataclass
class AttemptContext:
    session: Session
    attempt: Attempt
    now: datetime
    policy: Policy
    mail: MailComposer
    # Non-personal notes for this transition's log row (masked e-mail, reasons).
    notes: dict[str, Any] = field(default_factory=dict)


class StateBehaviour:
    """Base of the per-state mixins; the flow machine reads and writes ``state`` through it."""

    def __init__(self, context: AttemptContext) -> None:
        self.context = context

    @property
    def attempt(self) -> Attempt:
        return self.context.attempt

    @property
    def session(self) -> Session:
        return self.context.session

    @property
    def state(self) -> str | None:
        return self.context.attempt.state

    @state.setter
    def state(self, value: str) -> None:
        self.context.attempt.state = value

    def matched_eploz_account(self, account_id: int, *, changed: str) -> EplozAccount:
        """Return the e-PLOZ account the search matched, if it still matches the person.

        The directory may change between the search and a step that uses its result: an
        import blocks the account, gives it another PESEL or name, adds a second account
        under the PESEL, or removes it. The accounts under the person's PESEL are read under
        a share lock (which waits for an import under way and holds off the next one until
        this transaction ends) and the match is decided again; any other outcome than this
        account refuses the event with the reason ``changed``.
        """
        attempt = self.attempt
        self.session.execute(LOCK_EPLOZ_ACCOUNTS_UNDER_PESEL, {"pesel": attempt.pesel})
        # Read again, in a statement of its own: on PostgreSQL (read committed) the locking
        # statement re-reads the rows it waited for, but not the rows the same import added
        # (a second account under the PESEL); this one sees them. (SQLite: one writer at a
        # time, and this transaction is it.)
        candidates = self.session.scalars(
            EPLOZ_ACCOUNTS_UNDER_PESEL, {"pesel": attempt.pesel}
        ).all()
        outcome = match_account(candidates, attempt.given_names, attempt.family_name)
        if not isinstance(outcome.account, EplozAccount) or outcome.account.id != account_id:
            raise Rejected(changed)
        return outcome.account
