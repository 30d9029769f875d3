"""The mail sender: deliver the outbox's e-mail once the transitions that wrote it committed.

Claim due messages under a lease, hand each to the transport outside any transaction, and
record it sent, to retry or failed: docs/architecture.md, "Background work"; the retries,
the leases and what the outbox keeps in docs/operations.md, "Search worker and mail sender".
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import structlog
from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.mail_transport import DeliveryError, Transport
from ..adapters.maildir import MaildirTransport
from ..adapters.smtp import SmtpTransport
from ..backoff import jittered
from ..config import ConfigError, Settings
from ..db.engine import snapshot, transaction
from ..db.models import OUTBOX_UNSENT, OutboxMessage
from ..domain.privacy import mask_email
from ..metrics import MAIL_DELIVERIES, mail_failure
from .loop import LoopEvents, run_passes

log = structlog.get_logger(__name__)

#: The longest a message waits between two tries, however many it has had.
MAX_BACKOFF = timedelta(hours=1)
#: How many messages one claim takes; small, so a slow server does not hold many leases.
CLAIM_BATCH = 10
#: How often an idle sender looks for new mail. The person waits for the link meanwhile, so it
#: is short; a look is one read of ix_outbox_pending (see :meth:`OutboxSender.has_due`).
POLL_INTERVAL = 0.2
#: The longest an idle sender waits between two looks while the database keeps failing.
DATABASE_BACKOFF_CAP = 5.0
#: The waits of one delivery under ``SMTP_TIMEOUT_SECONDS``, counted generously: connecting,
#: the greeting, EHLO, STARTTLS with its handshake and the second EHLO, AUTH (a method or two
#: that fail before one that works), MAIL, RCPT, DATA, sending the message, QUIT.
SMTP_WAITS = 16
#: Beyond the SMTP exchange, the time a sender may need to record the outcome.
LEASE_MARGIN = timedelta(seconds=30)

EVENTS = LoopEvents(
    started="mail.sender_started",
    stopped="mail.sender_stopped",
    database_error="mail.database_error",
    database_recovered="mail.database_recovered",
    unexpected="mail.sender_pass_failed",
)

# A message a sender may take at ``:now``: neither sent, failed nor withdrawn, due, and
# nobody's lease on it (none, or run out). :meth:`OutboxSender.has_due` and
# :meth:`OutboxSender.claim` both ask this.
DUE = and_(
    OUTBOX_UNSENT,
    OutboxMessage.due_at <= bindparam("now"),
    or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until <= bindparam("now")),
)
# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
# An UPDATE built so, run through a session, must not have the session bring its loaded
# objects into line (synchronize_session=False): SQLAlchemy would evaluate the WHERE clause
# in Python, see a bound parameter as None, match nothing and leave them stale. The ones
# here run first in their transaction, with nothing loaded to update.
ANY_DUE = select(OutboxMessage.id).where(DUE).limit(1)
HOLD = (
    update(OutboxMessage)
    .where(OutboxMessage.id == bindparam("message"))
    .where(OutboxMessage.lease_until == bindparam("held_until"))
    .where(OUTBOX_UNSENT)
    .values(lease_until=bindparam("renewed"))
    .execution_options(synchronize_session=False)
)
MARK_SENT = (
    update(OutboxMessage)
    .where(OutboxMessage.id == bindparam("message"))
    .values(
        sent_at=bindparam("now"),
        # It went. Should another sender have taken it over meanwhile (a delivery that
        # outlasted its lease) and failed, that try does not undo this one.
        failed_at=None,
        tries=bindparam("tries_now"),
        lease_until=None,
        body="",  # the link and the name have no business here any more
        # Nor the address: masked, as the helpdesk and the logs show it (a***@csioz.pl).
        recipient=bindparam("masked_recipient"),
        # A message withdrawn while it went keeps saying why it was withdrawn.
        last_error=case((OutboxMessage.withdrawn_at.is_(None), ""), else_=OutboxMessage.last_error),
    )
    .execution_options(synchronize_session=False)
)
WITHDRAWN_AT = select(OutboxMessage.withdrawn_at).where(OutboxMessage.id == bindparam("message"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def transport_for(settings: Settings) -> Transport:
    """Return the transport ``MAIL_BACKEND`` names."""
    if settings.mail_backend == "maildir":
        return MaildirTransport(settings.maildir_path)
    if settings.mail_backend == "smtp":
        return SmtpTransport.from_settings(settings)
    raise ConfigError(f"MAIL_BACKEND must be smtp or maildir, not {settings.mail_backend!r}.")


@dataclass(frozen=True)
class SendReport:
    """What one pass over the outbox did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def claimed(self) -> int:
        return self.sent + self.retried + self.failed


class OutboxSender:
    """Claims due outbox messages, delivers them, and records the outcome.

    ``link_ttl``: how long a message is worth sending, counted from when it was written; the
    link in a verification e-mail works that long (``VERIFICATION_LINK_TTL_HOURS``), and the
    outbox holds no other kind of e-mail. ``max_tries``: tries, in all, after which a message
    that meets an error the sender cannot place (a fault of the service's, not the server's)
    is marked failed; delivery errors are retried for the whole ``link_ttl`` whatever it says.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        transport: Transport,
        *,
        mail_from: str,
        link_ttl: timedelta = timedelta(hours=24),
        max_tries: int = 8,
        retry_base: timedelta = timedelta(seconds=30),
        lease: timedelta = timedelta(minutes=5),
        batch: int = CLAIM_BATCH,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.transport = transport
        self.mail_from = mail_from
        self.link_ttl = link_ttl
        self.max_tries = max_tries
        self.retry_base = retry_base
        self.lease = lease
        self.batch = batch
        self.clock = clock
        self.rng = rng or random.Random()  # jitter, not a secret
        self.domain = parseaddr(mail_from)[1].partition("@")[2] or "ueoz.invalid"

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: sessionmaker[Session], **overrides: object
    ) -> OutboxSender:
        timeout = settings.smtp_timeout
        options: dict[str, object] = {
            "mail_from": settings.mail_from,
            "link_ttl": settings.verification_link_ttl,
            "max_tries": settings.mail_max_tries,
            "retry_base": settings.mail_retry_base,
            "lease": max(
                timedelta(minutes=1),
                # Long enough for a whole batch to meet a server that times out on every message.
                3 * CLAIM_BATCH * timeout,
                # Longer than one delivery can wait, the verdict on the message included: a
                # sender still waiting for it must never see another one take the message.
                SMTP_WAITS * timeout + settings.smtp_data_timeout + LEASE_MARGIN,
            ),
        }
        options.update(overrides)
        transport = options.pop("transport", None) or transport_for(settings)
        return cls(sessions, transport, **options)  # type: ignore[arg-type]

    def send_due(self, stop: threading.Event | None = None) -> SendReport:
        """Deliver every message due now, batch by batch, and say what happened.

        Once ``stop`` is set, no further message is begun: the one in hand is finished, and
        the rest of the batch is let go at once, for whichever sender looks next. So is it
        when the database fails this sender half-way (the error is raised all the same); only
        the message in hand keeps its lease, as nobody can tell whether it went.
        """
        sent = retried = failed = 0
        while True:
            claimed = [] if stop is not None and stop.is_set() else self.claim()
            if not claimed:
                return SendReport(sent, retried, failed)
            for index, message in enumerate(claimed):
                if stop is not None and stop.is_set():
                    self.release(claimed[index:])
                    return SendReport(sent, retried, failed)
                try:
                    if not self.hold(message):
                        continue  # another sender took it meanwhile, or the journey withdrew it
                    outcome = self.deliver(message)
                except SQLAlchemyError:
                    self.release(claimed[index + 1 :])
                    raise
                MAIL_DELIVERIES.labels(outcome).inc()
                sent += outcome == "sent"
                retried += outcome == "retry"
                failed += outcome == "failed"

    def release(self, messages: list[OutboxMessage]) -> None:
        """Let go of claimed messages not begun, so another sender need not wait for the lease.

        Only where our lease still stands. Best effort: with the database gone, the leases
        run out by themselves.
        """
        if not messages:
            return
        try:
            with transaction(self.sessions) as session:
                for message in messages:
                    session.execute(
                        update(OutboxMessage)
                        .where(OutboxMessage.id == message.id)
                        .where(OutboxMessage.lease_until == message.lease_until)
                        .values(lease_until=None)
                    )
        except SQLAlchemyError as error:
            log.warning("mail.release_failed", messages=len(messages), error=type(error).__name__)

    def has_due(self) -> bool:
        """Say whether a message is due now and free to take; a read, without any lock.

        :data:`DUE`, as :meth:`claim` asks it, read from a snapshot, so that an idle sender
        looking five times a second never queues for SQLite's write lock nor locks rows on
        PostgreSQL. A true answer may be stale; the claim decides.
        """
        now = self.clock()
        with snapshot(self.sessions) as session:
            return session.execute(ANY_DUE, {"now": now}).first() is not None

    def claim(self) -> list[OutboxMessage]:
        """Take a lease on up to one batch of due messages that nobody holds; commit at once."""
        now = self.clock()
        with transaction(self.sessions) as session:
            messages = session.scalars(
                select(OutboxMessage)
                .where(DUE)
                .order_by(OutboxMessage.due_at, OutboxMessage.id)
                .limit(self.batch)
                .with_for_update(skip_locked=True),
                {"now": now},
            ).all()
            for message in messages:
                message.lease_until = now + self.lease
            return list(messages)

    def hold(self, message: OutboxMessage) -> bool:
        """Renew a claimed message's lease for its delivery; False if it is no longer ours.

        A batch is claimed under one lease, but its messages go one after another, and a
        slow server (each reply just inside the timeout) can outlast the lease before the
        last ones: another sender may have claimed them meanwhile. The lease time we set is
        the claim's token — a later claim can only set a later one — so renewing only where
        it still stands, and the message is unsent, leaves each message to one sender. A
        message the journey withdrew since the claim is not ours to send either.
        """
        renewed = self.clock() + self.lease
        with transaction(self.sessions) as session:
            held = session.execute(
                HOLD,
                {"message": message.id, "held_until": message.lease_until, "renewed": renewed},
            )
            withdrawn = held.rowcount != 1 and (  # type: ignore[attr-defined]
                session.scalar(WITHDRAWN_AT, {"message": message.id}) is not None
            )
        if held.rowcount != 1:  # type: ignore[attr-defined]
            event = "mail.withdrawn" if withdrawn else "mail.lease_lost"
            log.info(event, outbox_id=message.id, attempt=message.attempt_id)
            return False
        message.lease_until = renewed
        return True

    def deliver(self, message: OutboxMessage) -> str:
        """Send one claimed message and record the outcome.

        ``sent``, ``retry`` or ``failed``; or ``withdrawn`` when the journey withdrew it while
        the transport was trying, or ``lease_lost`` when a failed try outlasted the lease and
        another sender holds the message now (neither counts as any of the others).

        At most once per claim, at least once overall: a sender that dies between the
        server's 250 and its own ``sent_at`` commit leaves the message to be sent again, with
        the same Message-ID (docs/operations.md, "Search worker and mail sender").
        """
        expires = message.created_at + self.link_ttl
        if self.clock() >= expires:
            # Its link has expired: sent now, it would bring the person a dead link.
            hours = f"{self.link_ttl / timedelta(hours=1):g}"
            reason = f"not delivered while its link worked ({hours} h)"
            if message.last_error:
                reason += f"; last error: {message.last_error}"
            return self._record_failure(
                message, message.tries, reason, final=True, retry_until=expires
            )
        if not message.body:
            # Emptied when it was sent or failed for good, and made due again by hand: sent
            # now, it would be an empty e-mail. The person asks for a new link instead.
            reason = "nothing to send: its body was emptied when it was sent or failed for good"
            if message.last_error:
                reason += f"; last error: {message.last_error}"
            return self._record_failure(
                message, message.tries, reason, final=True, retry_until=expires
            )
        tries = message.tries + 1
        try:
            self.transport.deliver(self.compose(message))
        except DeliveryError as error:
            return self._record_failure(
                message, tries, error.reason, final=error.permanent, retry_until=expires
            )
        except Exception as error:
            # Not the server's doing: a fault in composing or handing over this very message.
            # Recorded like a failed try, so that it holds up no other message, and given up
            # after max_tries (MAIL_MAX_TRIES), as trying the same fault again will not help.
            log.exception("mail.unexpected_error", outbox_id=message.id, attempt=message.attempt_id)
            return self._record_failure(
                message,
                tries,
                f"unexpected error: {type(error).__name__}",
                final=tries >= self.max_tries,
                retry_until=expires,
            )
        with transaction(self.sessions) as session:
            session.execute(
                MARK_SENT,
                {
                    "message": message.id,
                    "now": self.clock(),
                    "tries_now": tries,
                    "masked_recipient": mask_email(message.recipient),
                },
            )
        log.info(
            "mail.sent",
            outbox_id=message.id,
            kind=message.kind,
            attempt=message.attempt_id,
            to=mask_email(message.recipient),
            tries=tries,
        )
        return "sent"

    def _record_failure(
        self,
        message: OutboxMessage,
        tries: int,
        reason: str,
        *,
        final: bool,
        retry_until: datetime,
    ) -> str:
        """Mark the message failed (``final``), or due again after the backoff.

        Never later than ``retry_until``, the link's expiry: a message still unsent then is
        failed at that moment, not an hour after.
        """
        now = self.clock()
        values: dict[str, object] = {"tries": tries, "lease_until": None, "last_error": reason}
        if final:
            # Failed for good, it is never composed again: the link and the name go with it.
            values["failed_at"] = now
            values["body"] = ""
        else:
            values["due_at"] = min(now + self.backoff(tries), retry_until)
        with transaction(self.sessions) as session:
            recorded = session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .where(OutboxMessage.withdrawn_at.is_(None))
                # Still ours: a try that outlasted the lease says nothing of the sender that
                # took the message over, which may have sent it meanwhile.
                .where(OutboxMessage.lease_until == message.lease_until)
                .where(OutboxMessage.sent_at.is_(None))
                .values(**values)
            )
            lost = recorded.rowcount != 1 and (  # type: ignore[attr-defined]
                session.scalar(WITHDRAWN_AT, {"message": message.id}) is None
            )
        fields = {
            "outbox_id": message.id,
            "kind": message.kind,
            "attempt": message.attempt_id,
            "to": mask_email(message.recipient),
            "tries": tries,
            "error": reason,
        }
        mail_failure(reason, final=final)
        if lost:
            log.warning("mail.lease_lost", **fields)
            return "lease_lost"
        if recorded.rowcount != 1:  # type: ignore[attr-defined]
            # The journey withdrew it while the transport was trying: neither a failure nor
            # anything to try again.
            log.info("mail.withdrawn", **fields)
            return "withdrawn"
        if final:
            log.error("mail.failed", **fields)
            return "failed"
        log.warning("mail.retry", due_at=values["due_at"].isoformat(), **fields)  # type: ignore[attr-defined]
        return "retry"

    def backoff(self, tries: int) -> timedelta:
        """The wait before the next try of a message that failed ``tries`` times."""
        return jittered(self.retry_base, tries, MAX_BACKOFF, self.rng)

    def compose(self, message: OutboxMessage) -> EmailMessage:
        """Build the MIME message: UTF-8 plain text, quoted-printable so any server takes it."""
        mail = EmailMessage(policy=policy.default)  # LF; smtplib sends CRLF
        mail["From"] = self.mail_from
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(message.created_at.astimezone(UTC))
        # Fixed by the outbox row, so a copy sent again in the at-least-once window is
        # recognisably the same message.
        mail["Message-ID"] = f"<outbox-{message.id}.{message.attempt_id}@{self.domain}>"
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
        mail.set_content(message.body, charset="utf-8", cte="quoted-printable")
        return mail

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float = POLL_INTERVAL,
        backoff_cap: float = DATABASE_BACKOFF_CAP,
    ) -> None:
        """Send due mail until ``stop`` is set, looking again every ``interval`` seconds."""

        def one_pass() -> None:
            if self.has_due():
                self.send_due(stop)

        run_passes(
            stop,
            one_pass,
            worker="mail",
            log=log,
            events=EVENTS,
            interval=interval,
            backoff_cap=backoff_cap,
            context={"backend": type(self.transport).__name__},
        )
