"""The tables: attempts and their transition log, UEOZ accounts, the e-PLOZ directory, mail.

Personal data lives in ``attempts``, ``ueoz_accounts``, ``eploz_accounts`` and the outbox,
which the service needs to do its work; the transition log holds none of it in clear.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..domain.identity import (
    EMAIL_MAX,
    FAMILY_NAME_MAX,
    GIVEN_NAMES_MAX,
    LOGIN_MAX,
    PESEL_LENGTH,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: ``Column.info`` marks read by ``pesel rekey`` (db/pesel_keys.py): a column holding a PESEL
#: hash though not named ``pesel_hash``, and a column inside the audit chain's HMAC.
PESEL_HASH = "pesel_hash"
CHAINED = "chained"

# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps are always UTC and always timezone-aware in Python (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Attempt(Base):
    """One migration attempt: a persisted state machine."""

    __tablename__ = "attempts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(40), index=True)
    flow_version: Mapped[str] = mapped_column(String(64))
    # The person as the national login node identified them.
    pesel: Mapped[str] = mapped_column(String(PESEL_LENGTH))
    pesel_hash: Mapped[str] = mapped_column(String(64), index=True)
    given_names: Mapped[str] = mapped_column(String(GIVEN_NAMES_MAX))
    family_name: Mapped[str] = mapped_column(String(FAMILY_NAME_MAX))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    # Set while the attempt is open, cleared when it ends: at most one open attempt per PESEL.
    # The PESEL's hash (pesel_hash's value), which `pesel rekey` rewrites with it.
    open_pesel_key: Mapped[str | None] = mapped_column(
        String(64), unique=True, info={PESEL_HASH: True}
    )
    eploz_account_id: Mapped[int | None] = mapped_column(ForeignKey("eploz_accounts.id"))
    email_prefill: Mapped[str | None] = mapped_column(String(EMAIL_MAX))
    email: Mapped[str | None] = mapped_column(String(EMAIL_MAX))
    ueoz_account_id: Mapped[int | None] = mapped_column(ForeignKey("ueoz_accounts.id"))
    event_number: Mapped[str | None] = mapped_column(String(22), unique=True)
    event_code: Mapped[int | None] = mapped_column(Integer)
    domain_system: Mapped[str | None] = mapped_column(String(64))
    return_url: Mapped[str | None] = mapped_column(String(2000))
    language: Mapped[str] = mapped_column(String(5), default="pl")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    # The search worker's bookkeeping (not transitions: retries stay in `searching`).
    search_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    search_tries: Mapped[int] = mapped_column(Integer, default=0)
    search_lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The head of this attempt's log chain, so that a truncated log is caught too.
    log_seq: Mapped[int] = mapped_column(Integer, default=0)
    log_head: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (Index("ix_attempts_searching", "state", "search_due_at"),)


class TransitionLogEntry(Base):
    """One applied transition or refused event; append-only, hash-chained per attempt."""

    __tablename__ = "transition_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(String(32), ForeignKey("attempts.id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    event: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(10))  # applied | refused
    actor: Mapped[str] = mapped_column(String(20))  # user | worker | helpdesk | system
    request_id: Mapped[str] = mapped_column(String(64))
    flow_version: Mapped[str] = mapped_column(String(64))
    event_number: Mapped[str | None] = mapped_column(String(22))
    event_code: Mapped[int | None] = mapped_column(Integer)
    # Inside the chain's HMAC: `pesel rekey` leaves it under the key it was written with.
    pesel_hash: Mapped[str] = mapped_column(String(64), info={CHAINED: True})
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("attempt_id", "seq", name="uq_transition_log_attempt_seq"),
        Index("ix_transition_log_event_number", "event_number"),
    )


class FlowVersion(Base):
    """Every flow definition that ever ran, by the hash of its file, so old logs replay."""

    __tablename__ = "flow_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(Text)
    first_used_at: Mapped[datetime] = mapped_column(UtcDateTime())


class EventNumber(Base):
    """Minted event numbers; the key only ever grows, so no number is handed out twice."""

    __tablename__ = "event_numbers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(String(32), ForeignKey("attempts.id"))
    minted_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = ({"sqlite_autoincrement": True},)


#: The status of an account e-PLOZ no longer lists that ended attempts point at (never an
#: export's own value: those are ``active`` and ``blocked``). The search does not see it.
EPLOZ_REMOVED = "removed"


class EplozAccount(Base):
    """A row of the e-PLOZ export: the legacy account, read-only to the service."""

    __tablename__ = "eploz_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(LOGIN_MAX), unique=True)
    pesel: Mapped[str] = mapped_column(String(PESEL_LENGTH), index=True)
    first_name: Mapped[str] = mapped_column(String(GIVEN_NAMES_MAX))
    last_name: Mapped[str] = mapped_column(String(FAMILY_NAME_MAX))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), default="")
    status: Mapped[str] = mapped_column(String(10))
    roles: Mapped[str] = mapped_column(Text, default="")
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UeozAccount(Base):
    """The new account; verified once its e-mail address is confirmed."""

    __tablename__ = "ueoz_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pesel: Mapped[str] = mapped_column(String(PESEL_LENGTH))
    pesel_hash: Mapped[str] = mapped_column(String(64), unique=True)
    given_names: Mapped[str] = mapped_column(String(GIVEN_NAMES_MAX))
    family_name: Mapped[str] = mapped_column(String(FAMILY_NAME_MAX))
    login: Mapped[str | None] = mapped_column(String(LOGIN_MAX))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    email_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # An e-PLOZ account migrates at most once.
    eploz_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("eploz_accounts.id"), unique=True
    )
    roles: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class VerificationLink(Base):
    """A sent verification link; only the token's hash is kept."""

    __tablename__ = "verification_links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(String(32), ForeignKey("attempts.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


#: The ``kind`` of the e-mail carrying a verification link (the only kind the journey writes).
LINK_MAIL = "verification"


class OutboxMessage(Base):
    """An e-mail written in a transition's transaction and delivered after it commits."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    attempt_id: Mapped[str] = mapped_column(String(32), ForeignKey("attempts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(EMAIL_MAX))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    tries: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set when the journey took the message back before it went out: its link was retired
    # (a new address, a newer link, the address verified, the attempt expired). Not a
    # delivery failure; ``last_error`` says why. NULL: not withdrawn, or written before 0003.
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")

    # The senders' "due" question (adapters/mail.py, DUE) reads this index; withdrawn rows
    # stay out of its NULL prefix, however many of them pile up.
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "failed_at", "withdrawn_at", "due_at"),)


#: An outbox message still to go out: neither sent, failed for good, nor withdrawn.
OUTBOX_UNSENT = and_(
    OutboxMessage.sent_at.is_(None),
    OutboxMessage.failed_at.is_(None),
    OutboxMessage.withdrawn_at.is_(None),
)


class SamlOnce(Base):
    """Artifacts and assertion IDs already used: each is accepted once, in every process."""

    __tablename__ = "saml_once"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class PendingLogin(Base):
    """An AuthnRequest sent to the node, found again by its RelayState (no cookie needed)."""

    __tablename__ = "pending_logins"

    relay_state: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), unique=True)
    domain_system: Mapped[str | None] = mapped_column(String(64))
    return_url: Mapped[str | None] = mapped_column(String(2000))
    language: Mapped[str] = mapped_column(String(5), default="pl")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The SHA-256 of the key kept in the session of the browser that started the login: the
    # node's answer is taken only in that browser (no login CSRF). NULL: started before 0002.
    browser_key_hash: Mapped[str | None] = mapped_column(String(64))


class WebSession(Base):
    """Server-side web sessions, shared by every instance of the service."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
