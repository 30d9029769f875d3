"""What every state's behaviour can reach: the attempt, its transaction, the clock, mail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from ..db.models import Attempt


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
