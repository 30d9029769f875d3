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
    text,
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
    # The registered domain system (oidc_clients) the person came from, if any.
    domain_system: Mapped[str | None] = mapped_column(String(64))
    # Unused since schema 0004 (the domain systems' OpenID Connect replaced return addresses);
    # dropped in a later release, as docs/operations.md ("Releasing") says.
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
    # When ``retention purge`` emptied the person's data of this ended attempt (retention.py).
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_attempts_searching", "state", "search_due_at"),
        # The purge's question: not purged yet, ended before the cut-off.
        Index("ix_attempts_purge", "purged_at", "updated_at"),
    )


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
        # The console's progress (console/progress.py): one event's applied rows in a period,
        # counted per day or per attempt from the index alone; and the codes minted.
        Index("ix_transition_log_progress", "event", "outcome", "at", "attempt_id"),
        Index(
            "ix_transition_log_codes",
            "at",
            "event_code",
            sqlite_where=text("event_code IS NOT NULL"),
            postgresql_where=text("event_code IS NOT NULL"),
        ),
    )


class LogAnchor(Base):
    """A signed head of the whole log that ``audit anchor`` wrote out: where the next one goes on.

    The copy that counts is the file outside the database (anchors/); this one only spares
    the next anchor a pass over the rows it already covered, and is trusted only when its
    signature holds.
    """

    __tablename__ = "log_anchors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    taken_at: Mapped[datetime] = mapped_column(UtcDateTime())
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    # The highest transition_log.id it covers: the next anchor reads the rows above it.
    last_log_id: Mapped[int] = mapped_column(BigInteger)
    document: Mapped[str] = mapped_column(Text)


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

    # The console's progress: the links used in a period, and how old each was then
    # (console/progress.py), from the index alone.
    __table_args__ = (Index("ix_verification_links_used", "used_at", "created_at"),)


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

    # The senders' "due" question (workers/outbox.py, DUE) reads this index; withdrawn rows
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
    # Unused since schema 0004, as attempts.return_url.
    return_url: Mapped[str | None] = mapped_column(String(2000))
    language: Mapped[str] = mapped_column(String(5), default="pl")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The SHA-256 of the key kept in the session of the browser that started the login: the
    # node's answer is taken only in that browser (no login CSRF). NULL: started before 0002.
    browser_key_hash: Mapped[str | None] = mapped_column(String(64))
    # The domain system's authorization request this login serves (oidc_authorizations), and
    # the level of assurance it asked the node for (eIDAS URI), when higher than WK_LOA.
    authorization_id: Mapped[str | None] = mapped_column(String(64))
    loa: Mapped[str | None] = mapped_column(String(100))
    # What the login is for: NULL, the migration journey; ``console``, a staff member
    # signing in to the staff console (web/console.py), who starts no attempt.
    purpose: Mapped[str | None] = mapped_column(String(20))


class WebSession(Base):
    """Server-side web sessions, shared by every instance of the service."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


# -- the OpenID Provider for the domain systems (oidc/, web/oidc.py) ------------------------


class OidcClient(Base):
    """A domain system registered as a relying party (``ueoz-migration clients add``)."""

    __tablename__ = "oidc_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    name: Mapped[str] = mapped_column(String(200))
    # client_secret_basic or private_key_jwt.
    auth_method: Mapped[str] = mapped_column(String(40))
    # SHA-256 of the secret (client_secret_basic); NULL for a private_key_jwt client.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    # JSON lists of exact addresses.
    redirect_uris: Mapped[str] = mapped_column(Text)
    post_logout_redirect_uris: Mapped[str] = mapped_column(Text, default="[]")
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    # Where the domain system starts a sign-in (OpenID Connect Core 4): the way back to it
    # from a browser that holds no authorization request (the link opened in another one).
    initiate_login_uri: Mapped[str | None] = mapped_column(String(2000))
    # A private_key_jwt client's public keys: a JWKS (JSON), or where to fetch it.
    jwks: Mapped[str | None] = mapped_column(Text)
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    scopes: Mapped[str] = mapped_column(Text)  # the scopes it may ask for, space-separated
    subject_type: Mapped[str] = mapped_column(String(10))  # pairwise | public
    id_token_alg: Mapped[str] = mapped_column(String(10), default="ES256")  # or RS256
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class OidcAuthorization(Base):
    """An authorization request waiting for the person: the node login, then the journey.

    Its id is kept in the session of the browser that made the request, and in the pending
    login sent to the node; it is completed (a code, or an error for the domain system) once.
    """

    __tablename__ = "oidc_authorizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    query: Mapped[str] = mapped_column(Text)  # the request's parameters, as it was validated
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SsoSession(Base):
    """A person's single sign-on session at UEOZ, from one node login, shared by instances."""

    __tablename__ = "sso_sessions"

    # Secret: the browser's web session holds it.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Public: the ``sid`` of its ID tokens and back-channel logout tokens.
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    pesel_hash: Mapped[str] = mapped_column(String(64), index=True)
    acr: Mapped[str] = mapped_column(String(100))  # the node's level of assurance
    auth_time: Mapped[datetime] = mapped_column(UtcDateTime())
    # The node's session, ended by the SOAP logout when this one ends.
    name_id: Mapped[str] = mapped_column(String(200))
    session_index: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class SsoSessionClient(Base):
    """A domain system signed in to through an SSO session: told when the session ends."""

    __tablename__ = "sso_session_clients"

    sso_session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("sso_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ueoz_accounts.id"))
    first_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_at: Mapped[datetime] = mapped_column(UtcDateTime())


class OidcCode(Base):
    """An authorization code: single-use, short-lived, bound to client, redirect and PKCE."""

    __tablename__ = "oidc_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(String(255))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ueoz_accounts.id"))
    sso_session_id: Mapped[str] = mapped_column(String(64))
    auth_time: Mapped[datetime] = mapped_column(UtcDateTime())
    acr: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set when the code came back after it was used: the tokens it gave are revoked.
    reused_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_oidc_codes_client_nonce", "client_id", "nonce"),)


class OidcToken(Base):
    """An access token for the userinfo endpoint; only its hash is kept."""

    __tablename__ = "oidc_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(BigId, ForeignKey("ueoz_accounts.id"))
    scope: Mapped[str] = mapped_column(Text)
    sso_session_id: Mapped[str] = mapped_column(String(64), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), index=True)  # the code it came from
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class BackchannelLogout(Base):
    """A logout token to deliver to a domain system (OpenID Connect Back-Channel Logout).

    Written in the transaction that ends the SSO session, delivered afterwards by the logout
    sender, as the outbox's e-mail is; the token itself is signed at delivery, not stored.
    """

    __tablename__ = "backchannel_logouts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64))
    sid: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64))  # the client's ``sub`` for the person
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    tries: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_backchannel_logouts_pending", "sent_at", "failed_at", "due_at"),)


# -- the staff console (console/, web/console.py) -------------------------------------------


class StaffMember(Base):
    """Someone who may sign in to the staff console: found by the keyed hash of their PESEL."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pesel_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Kept so that `pesel rekey` can rewrite the hash: a staff member need not be in any
    # other table that holds the PESEL. Shown only masked (``********247``).
    pesel: Mapped[str] = mapped_column(String(11))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StaffRole(Base):
    """A role granted to a staff member (``staff grant``); kept when revoked, for the record."""

    __tablename__ = "staff_roles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    staff_id: Mapped[int] = mapped_column(BigId, ForeignKey("staff.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))  # helpdesk | auditor | operator
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    granted_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        # A role is held once at a time; its revoked grants stay beside it.
        Index(
            "uq_staff_roles_held",
            "staff_id",
            "role",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class StaffView(Base):
    """Who looked at whom: one staff member's look at an attempt in the console, or a search.

    No name and no PESEL: the staff member by their id, the person by the attempt's id.
    """

    __tablename__ = "staff_views"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    staff_id: Mapped[int] = mapped_column(BigId, ForeignKey("staff.id"))
    role: Mapped[str] = mapped_column(String(20))  # the role the look was made in
    # NULL: a look-up that matched nothing, or an export of a period.
    attempt_id: Mapped[str | None] = mapped_column(String(32), index=True)
    purpose: Mapped[str] = mapped_column(String(40))  # console/looks.py, PURPOSES
    detail: Mapped[str] = mapped_column(String(200), default="")
    request_id: Mapped[str] = mapped_column(String(64))

    # The hourly limit of look-ups counts one staff member's recent ones.
    __table_args__ = (Index("ix_staff_views_staff_purpose_at", "staff_id", "purpose", "at"),)
