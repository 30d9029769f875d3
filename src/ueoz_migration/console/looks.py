"""Who looked at whom: every look at a person's data in the console is itself recorded.

A row of ``staff_views`` names the staff member by their staff id (never by name or PESEL),
the role they acted in, the attempt by its id, and why (:data:`PURPOSES`). Auditors list
them in the console. The helpdesk's look-ups are counted from the same rows, matched or not,
for the hourly limit (``CONSOLE_LOOKUPS_PER_HOUR``): a wrong number costs as much as a right
one, so the limit also bounds guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import StaffMember, StaffView
from ..domain.privacy import mask_pesel

LOOKUP = "lookup"
#: Why a staff member looked, as the auditors' list says it.
PURPOSES = {
    LOOKUP: "helpdesk look-up (event number and PESEL digits)",
    "story": "helpdesk: the attempt's story again",
    "resend": "helpdesk: resend the verification e-mail",
    "cancel": "helpdesk: cancel the attempt",
    "verify": "audit: verify the attempt's chain",
    "replay": "audit: replay the attempt",
    "export": "audit: export of a period",
}
PAGE = 100  # records an auditor's list shows at a time


@dataclass(frozen=True)
class Look:
    """One record of the auditors' list."""

    id: int
    at: datetime
    staff_id: int
    staff_pesel: str  # masked
    role: str
    attempt_id: str | None
    purpose: str
    detail: str
    request_id: str


class Looks:
    """Record looks, count a staff member's look-ups, list the records."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def record(
        self,
        *,
        staff_id: int,
        role: str,
        attempt_id: str | None,
        purpose: str,
        request_id: str,
        now: datetime,
        detail: str = "",
    ) -> None:
        assert purpose in PURPOSES, purpose
        with transaction(self.sessions) as session:
            session.add(
                StaffView(
                    at=now,
                    staff_id=staff_id,
                    role=role,
                    attempt_id=attempt_id,
                    purpose=purpose,
                    detail=detail[:200],
                    request_id=request_id,
                )
            )

    def lookups_in_last_hour(self, staff_id: int, now: datetime) -> int:
        with snapshot(self.sessions) as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(StaffView)
                    .where(StaffView.staff_id == staff_id)
                    .where(StaffView.purpose == LOOKUP)
                    .where(StaffView.at > now - timedelta(hours=1))
                )
                or 0
            )

    def listed(self, *, attempt_id: str | None = None, before: int | None = None) -> list[Look]:
        """The newest records first, :data:`PAGE` at a time (``before``: an id to go on from)."""
        query = (
            select(StaffView, StaffMember.pesel)
            .join(StaffMember, StaffMember.id == StaffView.staff_id)
            .order_by(StaffView.id.desc())
            .limit(PAGE)
        )
        if attempt_id is not None:
            query = query.where(StaffView.attempt_id == attempt_id)
        if before is not None:
            query = query.where(StaffView.id < before)
        with snapshot(self.sessions) as session:
            return [
                Look(
                    view.id,
                    view.at,
                    view.staff_id,
                    mask_pesel(pesel),
                    view.role,
                    view.attempt_id,
                    view.purpose,
                    view.detail,
                    view.request_id,
                )
                for view, pesel in session.execute(query)
            ]
