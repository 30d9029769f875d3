"""Personal data that expires: ``ueoz-migration retention purge``.

An attempt that ended (done, handed_off, cancelled, expired, skipped) keeps the person's data
for the helpdesk for ``RETENTION_DAYS`` (90) after its last step; then the purge empties it,
in every table that holds it for that attempt: :data:`PERSONAL_DATA` is the one list of those
tables and columns, and ``docs/privacy.md`` says why each is kept and what removes it.

What the purge leaves is what the audit and the helpdesk still need, none of it personal in
clear: the attempt's id, state, times, event number and code, flow version and log chain
(the transition log itself is never touched: it holds the keyed PESEL hash and masked
addresses only, so ``audit verify`` and ``audit replay`` hold after a purge), and the PESEL's
last three digits, which the helpdesk's look-up asks the caller for.

Safe to run from cron on every instance at once: each batch is one transaction that locks
its attempts with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
serialises the purges), so two purges never take the same attempt, and a purged attempt has
``purged_at`` set and is never taken again. The rows an attempt only points at (its UEOZ
account, its e-PLOZ account) are locked in id order, and each is emptied only while every
attempt pointing at it ended before the cut-off: a new attempt of the same person keeps them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, sessionmaker

from .db.engine import transaction
from .db.models import (
    EPLOZ_REMOVED,
    Attempt,
    BackchannelLogout,
    Base,
    EplozAccount,
    OidcAuthorization,
    OidcCode,
    OidcToken,
    OutboxMessage,
    SsoSession,
    UeozAccount,
    VerificationLink,
    WebSession,
)

log = structlog.get_logger(__name__)

#: Attempts one transaction purges; small enough that a purge holds no lock for long.
BATCH = 200

# Rows of other tables are purged for a batch of attempts (their ids) ended before a cut-off.
Owned = Callable[[Sequence[str], datetime], ColumnElement[bool]]


@dataclass(frozen=True)
class PersonalData:
    """The columns of one table that hold personal data, and what a purge leaves in them."""

    table: type[Base]
    #: Column name → the value (or SQL expression) left in it.
    emptied: Mapping[str, Any]
    #: The table's rows that belong to a batch of attempts ended before the cut-off.
    rows: Owned


def _of_attempts(column: Any) -> Owned:
    return lambda ids, _cutoff: column.in_(ids)


def _pointed_at(fk: Any, target: Any, extra: Callable[[], ColumnElement[bool]]) -> Owned:
    """Rows the batch's attempts point at through ``fk``, held by no attempt still in use."""

    def rows(ids: Sequence[str], cutoff: datetime) -> ColumnElement[bool]:
        other = aliased(Attempt)
        pointing = getattr(other, fk.key)
        in_use = exists().where(
            pointing == target,
            or_(other.open_pesel_key.is_not(None), other.updated_at > cutoff),
        )
        return and_(
            target.in_(select(fk).where(Attempt.id.in_(ids))),
            extra(),
            ~in_use,
        )

    return rows


def _masked_pesel(column: Any) -> ColumnElement[str]:
    """``********247``: the last three digits, which the helpdesk's look-up asks for."""
    return literal("********") + func.substr(column, 9, 3)


#: Every table and column the purge empties, in the order it empties them (the attempts
#: last: the other tables' rows are found through them). docs/privacy.md lists each.
PERSONAL_DATA: tuple[PersonalData, ...] = (
    PersonalData(
        OutboxMessage,
        {"recipient": "", "body": ""},
        _of_attempts(OutboxMessage.attempt_id),
    ),
    PersonalData(
        VerificationLink,
        {"email": ""},
        _of_attempts(VerificationLink.attempt_id),
    ),
    # An account made for an attempt whose address was never verified: a later attempt of the
    # same person would have taken it up again (states/email_entry.py); none did in time.
    PersonalData(
        UeozAccount,
        {
            "pesel": _masked_pesel(UeozAccount.pesel),
            "given_names": "",
            "family_name": "",
            "email": "",
            "login": None,
            "roles": "",
            "eploz_account_id": None,
        },
        _pointed_at(
            Attempt.ueoz_account_id, UeozAccount.id, lambda: UeozAccount.email_verified_at.is_(None)
        ),
    ),
    # An account e-PLOZ no longer lists, kept only for the history of the attempts that found it.
    PersonalData(
        EplozAccount,
        {
            "login": literal("purged-") + cast(EplozAccount.id, String),
            "pesel": "",
            "first_name": "",
            "last_name": "",
            "email": "",
            "roles": "",
        },
        _pointed_at(
            Attempt.eploz_account_id,
            EplozAccount.id,
            lambda: and_(
                EplozAccount.status == EPLOZ_REMOVED,
                ~exists().where(UeozAccount.eploz_account_id == EplozAccount.id),
            ),
        ),
    ),
    PersonalData(
        Attempt,
        {
            "pesel": _masked_pesel(Attempt.pesel),
            "given_names": "",
            "family_name": "",
            "date_of_birth": None,
            "email_prefill": None,
            "email": None,
        },
        _of_attempts(Attempt.id),
    ),
)


@dataclass(frozen=True)
class Expiring:
    """A table whose rows are deleted ``after`` their ``column``'s time, whoever wrote them."""

    table: type[Base]
    key: Any
    column: Any
    after: timedelta = timedelta(0)


#: Tables whose rows are deleted once their time is up. A web session holds the ids of the
#: person's attempt and SSO session (the web service deletes expired ones too, but only
#: while requests come in); an SSO session the node's pseudonym of the person (``name_id``)
#: and the keyed PESEL hash; the provider's requests, codes, tokens and logout deliveries
#: are worthless once over.
EXPIRED_ROWS: tuple[Expiring, ...] = (
    Expiring(WebSession, WebSession.id, WebSession.expires_at),
    Expiring(SsoSession, SsoSession.id, SsoSession.expires_at),  # its clients go with it
    Expiring(OidcAuthorization, OidcAuthorization.id, OidcAuthorization.expires_at),
    # Kept a day past its expiry: a code used again within it still revokes the tokens it
    # gave (codes.py), which outlive the code itself.
    Expiring(OidcCode, OidcCode.code_hash, OidcCode.expires_at, timedelta(days=1)),
    Expiring(OidcToken, OidcToken.token_hash, OidcToken.expires_at),
    # Delivered, given up, or still being tried (for an hour at most): gone after a day.
    Expiring(
        BackchannelLogout, BackchannelLogout.id, BackchannelLogout.created_at, timedelta(days=1)
    ),
)


@dataclass
class PurgeReport:
    """What one purge emptied: attempts, and rows per table (the attempts' own included)."""

    attempts: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    expired: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        tables = ", ".join(f"{name} {count}" for name, count in sorted(self.rows.items()))
        gone = ", ".join(f"{name} {count}" for name, count in sorted(self.expired.items()))
        return (
            f"purged the personal data of {self.attempts} ended attempt(s)"
            + (f" (rows: {tables})" if tables else "")
            + f"; expired rows deleted: {gone or 'none'}"
        )


#: An attempt to purge at ``cutoff``: ended (every final state clears ``open_pesel_key``),
#: its last step before the cut-off, not purged yet.
def _due(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Attempt.purged_at.is_(None),
        Attempt.open_pesel_key.is_(None),
        Attempt.updated_at <= cutoff,
    )


def purge(
    sessions: sessionmaker[Session],
    *,
    older_than: timedelta,
    now: datetime,
    batch: int = BATCH,
) -> PurgeReport:
    """Empty the personal data of attempts that ended more than ``older_than`` before ``now``."""
    cutoff = now - older_than
    report = PurgeReport()
    while True:
        with transaction(sessions) as session:
            ids = session.scalars(
                select(Attempt.id)
                .where(_due(cutoff))
                .order_by(Attempt.updated_at, Attempt.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            if not ids:
                break
            for part in PERSONAL_DATA:
                report.rows[part.table.__tablename__] += _empty(session, part, ids, cutoff)
            session.execute(
                update(Attempt).where(Attempt.id.in_(ids)).values(purged_at=now),
                execution_options={"synchronize_session": False},
            )
        report.attempts += len(ids)
        log.info("retention.purged", attempts=len(ids), cutoff=cutoff.isoformat())
    for expiring in EXPIRED_ROWS:
        report.expired[expiring.table.__tablename__] += _delete_expired(
            sessions, expiring, now - expiring.after, batch
        )
    return report


def _empty(session: Session, part: PersonalData, ids: Sequence[str], cutoff: datetime) -> int:
    """Lock the part's rows of the batch in key order, then empty those still its own."""
    [key] = part.table.__mapper__.primary_key
    locked = session.scalars(
        select(key).where(part.rows(ids, cutoff)).order_by(key).with_for_update()
    ).all()
    if not locked:
        return 0
    # Asked again, by a statement of its own that sees what committed while it waited for
    # the locks: a new attempt of the person may have taken up the account meanwhile.
    done = session.execute(
        update(part.table)
        .where(key.in_(locked), part.rows(ids, cutoff))
        .values(dict(part.emptied))
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def _delete_expired(
    sessions: sessionmaker[Session], expiring: Expiring, until: datetime, batch: int
) -> int:
    """Delete the table's rows whose time was up at ``until``, a batch a transaction."""
    table, key, column = expiring.table, expiring.key, expiring.column
    deleted = 0
    while True:
        with transaction(sessions) as session:
            keys = session.scalars(
                select(key).where(column <= until).limit(batch).with_for_update(skip_locked=True)
            ).all()
            if keys:
                session.execute(
                    delete(table).where(key.in_(keys), column <= until),
                    execution_options={"synchronize_session": False},
                )
        deleted += len(keys)
        if len(keys) < batch:
            return deleted
