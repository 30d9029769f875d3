"""Who may use the staff console, in which roles: assignments keyed by the PESEL's hash.

Staff sign in through the national node like everyone (they have a PESEL); what they may do
comes from the roles granted here with ``ueoz-migration staff grant``. No passwords. The
PESEL is kept as its keyed hash (``PESEL_HASH_KEY``), as everywhere else, and its last three
digits, so that ``staff list`` can tell people apart without showing anyone whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot, transaction
from ..db.models import StaffMember, StaffRole
from ..domain.privacy import mask_pesel, pesel_hash


class Role(StrEnum):
    """What a staff member does in the console (docs/console.md leads to a page for each)."""

    HELPDESK = "helpdesk"  # looks attempts up for callers; resends, cancels
    AUDITOR = "auditor"  # verifies and replays the log, exports it; who looked at whom
    OPERATOR = "operator"  # the migration's progress, the queues


class StaffError(ValueError):
    """A grant or revocation that cannot be made as asked."""


@dataclass(frozen=True)
class Grant:
    """A role as ``staff list`` shows it."""

    staff_id: int
    pesel: str  # masked: ``********247``
    role: str
    granted_at: datetime
    granted_by: str
    revoked_at: datetime | None
    revoked_by: str | None


@dataclass(frozen=True)
class StaffIdentity:
    """A person signed in to the console: their staff id (None: not staff) and roles now."""

    staff_id: int | None
    roles: frozenset[Role]


class Staff:
    """Grant, revoke and read roles; one transaction each."""

    def __init__(self, sessions: sessionmaker[Session], pesel_key: bytes) -> None:
        self.sessions = sessions
        self.pesel_key = pesel_key

    def hash_of(self, pesel: str) -> str:
        if not self.pesel_key:
            raise StaffError("no PESEL_HASH_KEY in this process: staff are known by its hash")
        return pesel_hash(self.pesel_key, pesel)

    def grant(self, pesel: str, role: Role, *, by: str, now: datetime) -> bool:
        """Grant ``role`` to the person with ``pesel``; False when they hold it already."""
        key = self.hash_of(pesel)
        try:
            with transaction(self.sessions) as session:
                member = self._member(session, key)
                if member is None:
                    member = StaffMember(pesel_hash=key, pesel=pesel, created_at=now)
                    session.add(member)
                    session.flush()
                elif self._held(session, member.id, role) is not None:
                    return False
                session.add(StaffRole(staff_id=member.id, role=role, granted_at=now, granted_by=by))
        except IntegrityError:
            return False  # granted at the same moment by someone else: held all the same
        return True

    def revoke(self, pesel: str, role: Role, *, by: str, now: datetime) -> bool:
        """Revoke ``role`` from the person with ``pesel``; False when they did not hold it."""
        key = self.hash_of(pesel)
        with transaction(self.sessions) as session:
            member = self._member(session, key)
            held = self._held(session, member.id, role) if member is not None else None
            if held is None:
                return False
            held.revoked_at, held.revoked_by = now, by
        return True

    def grants(self, *, with_revoked: bool = False) -> list[Grant]:
        """Every role held (and, asked for, every one revoked), by staff member and time."""
        query = (
            select(StaffRole, StaffMember.pesel)
            .join(StaffMember, StaffMember.id == StaffRole.staff_id)
            .order_by(StaffRole.staff_id, StaffRole.granted_at, StaffRole.id)
        )
        if not with_revoked:
            query = query.where(StaffRole.revoked_at.is_(None))
        with snapshot(self.sessions) as session:
            return [
                Grant(
                    role.staff_id,
                    mask_pesel(pesel),
                    role.role,
                    role.granted_at,
                    role.granted_by,
                    role.revoked_at,
                    role.revoked_by,
                )
                for role, pesel in session.execute(query)
            ]

    def identify(self, key: str) -> StaffIdentity:
        """The staff member whose PESEL hashes to ``key``, with the roles they hold now."""
        with snapshot(self.sessions) as session:
            rows = session.execute(
                select(StaffMember.id, StaffRole.role)
                .outerjoin(
                    StaffRole,
                    (StaffRole.staff_id == StaffMember.id) & StaffRole.revoked_at.is_(None),
                )
                .where(StaffMember.pesel_hash == key)
            ).all()
        if not rows:
            return StaffIdentity(None, frozenset())
        return StaffIdentity(rows[0][0], frozenset(Role(role) for _, role in rows if role))

    @staticmethod
    def _member(session: Session, key: str) -> StaffMember | None:
        return session.scalars(select(StaffMember).where(StaffMember.pesel_hash == key)).first()

    @staticmethod
    def _held(session: Session, staff_id: int, role: Role) -> StaffRole | None:
        return session.scalars(
            select(StaffRole)
            .where(StaffRole.staff_id == staff_id)
            .where(StaffRole.role == role)
            .where(StaffRole.revoked_at.is_(None))
        ).first()
