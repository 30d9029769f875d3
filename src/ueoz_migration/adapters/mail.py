"""Deliver the outbox: the e-mails that transitions wrote, sent after their transaction committed.

A transition that sends mail only adds an :class:`~ueoz_migration.db.models.OutboxMessage` in
its own transaction (see :mod:`ueoz_migration.states.awaiting_verification`); nothing leaves the
service until that transaction has committed. The sender then works in three short steps, so
that any number of senders can run on any number of machines:

1. **claim**: in one short transaction, pick due rows nobody holds (``FOR UPDATE SKIP LOCKED``
   on PostgreSQL; on SQLite the engine's ``BEGIN IMMEDIATE`` serialises the claimers) and set
   their lease, then commit;
2. **deliver**: hand each claimed message to the transport (SMTP, or a Maildir folder on the
   embedded default) with no transaction open;
3. **record**: mark it sent, or count the failed try and put it off with exponential backoff
   and jitter. A message is worth trying for as long as the link it carries works
   (``VERIFICATION_LINK_TTL_HOURS``): a server that is down, refuses our login or says "later"
   is tried again until then, and a message still unsent when its link expires is marked
   failed. A server that refuses the message or its recipient for good fails it at once.
   Failures are logged at error level for the operators.

A message sent, or failed for good, has its body emptied in the update that says so: the body
holds the verification link, a bearer secret for as long as the link lives, and the person's
name, and nothing needs them once the message is out of the sender's hands. A message sent
also keeps its recipient masked only (``a***@csioz.pl``), as the helpdesk shows it; the rest
of an ended attempt's mail goes with its personal data (:mod:`ueoz_migration.retention`).

A message the journey withdrew (its link was retired: see
:meth:`~ueoz_migration.states.awaiting_verification.AwaitingVerification.retire_verification_links`)
is no sender's business any more: it is not due, not held, and not a failure.

Logs and ``last_error`` carry no personal data: recipients appear masked (``a***@domain``), and
of an SMTP server's reply only its codes (``recipient refused: 550 5.1.1``), never its text,
which quotes the address, or part of it, and at times the person's name.
"""

from __future__ import annotations

import mailbox
import random
import re
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..backoff import wait_after_failures
from ..config import ConfigError, Settings
from ..db.engine import snapshot, transaction
from ..db.models import LINK_MAIL, OUTBOX_UNSENT, OutboxMessage
from ..domain.privacy import mask_email
from ..metrics import MAIL_DELIVERIES, mail_failure, worker_pass

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
LATEST_LINK_MAIL = (
    select(OutboxMessage)
    .where(OutboxMessage.attempt_id == bindparam("attempt"))
    .where(OutboxMessage.kind == LINK_MAIL)
    .order_by(OutboxMessage.id.desc())
    .limit(1)
)

# RFC 3463's enhanced status code, which a server that offers ENHANCEDSTATUSCODES puts first
# in the text of its reply: class.subject.detail, digits only.
_ENHANCED_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})(?!\S)")


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeliveryError(Exception):
    """The transport could not hand the message over.

    ``reason`` is safe to store and log (no personal data). ``permanent`` means the server
    refused this very message for good (an unknown mailbox, say): trying again cannot help.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Transport(Protocol):
    def deliver(self, message: EmailMessage) -> None:
        """Hand the message over or raise :class:`DeliveryError`."""


# -- transports ---------------------------------------------------------------------------


class SmtpTransport:
    """Send over SMTP, one connection per message (the outbox is low-volume).

    An unreachable, silent or temporarily refusing server (4xx) is a reason to try later; a
    5xx refusal of the recipient or of the message itself is final for this message. A 5xx
    refusal of our login or our sender address is a configuration fault that hits every
    message alike, so it is retried too: the operator fixes the setting and nothing is lost.

    Addresses go to the server with their domain in ASCII form (:func:`smtp_address`), in the
    envelope and in the To header alike, so that a relay without SMTPUTF8 delivers them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        ca_file: str = "",
        timeout: float = 10.0,
        data_timeout: float = 120.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.timeout, self.data_timeout = starttls, timeout, data_timeout
        # The server's certificate is always verified: against the system's authorities, or
        # against ``ca_file`` alone (a relay inside the ministry, with a private authority).
        self.tls = ssl.create_default_context(cafile=ca_file or None)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout.total_seconds(),
            data_timeout=settings.smtp_data_timeout.total_seconds(),
        )

    def deliver(self, message: EmailMessage) -> None:
        sender = smtp_address(parseaddr(str(message["From"]))[1])
        recipient = smtp_address(str(message["To"]))  # the outbox writes the bare address
        message.replace_header("To", recipient)
        try:
            with _Connection(self.host, self.port, self.timeout, self.data_timeout) as smtp:
                if self.starttls:
                    self._start_tls(smtp)
                if self.username:
                    self._log_in(smtp)
                if not (sender + recipient).isascii():
                    self._check_smtputf8(smtp, recipient)
                smtp.send_message(message, sender, [recipient])
        except smtplib.SMTPRecipientsRefused as error:
            # One recipient per message, so "all refused" is this message's recipient.
            code, text = next(iter(error.recipients.values()))
            raise DeliveryError(
                _refusal("recipient refused", code, text), permanent=500 <= code < 600
            ) from None
        except smtplib.SMTPResponseException as error:
            code, what = error.smtp_code, _REFUSALS.get(type(error), "server said")
            permanent = isinstance(error, smtplib.SMTPDataError) and 500 <= code < 600
            raise DeliveryError(
                _refusal(what, code, error.smtp_error), permanent=permanent
            ) from None
        except smtplib.SMTPNotSupportedError as error:
            # smtplib's own words (no address in them): an extension this delivery needs.
            raise DeliveryError(f"server lacks what the delivery needs: {error}") from None
        except ssl.SSLError as error:
            # A certificate that does not verify, or a failed handshake: said by class only.
            raise DeliveryError(f"TLS with the server failed: {type(error).__name__}") from None
        except (smtplib.SMTPException, OSError) as error:
            # Refused or reset connections, timeouts, a server that hangs up.
            raise DeliveryError(f"server unreachable: {type(error).__name__}") from None

    def _start_tls(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.starttls(context=self.tls)
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError("server offers no STARTTLS: nothing sent in clear") from None

    def _log_in(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.login(self.username, self.password)
        except smtplib.SMTPNotSupportedError:
            # Many servers offer AUTH only once the connection is encrypted.
            raise DeliveryError(
                "server offers no login (AUTH) here: check SMTP_USERNAME and SMTP_STARTTLS"
            ) from None

    @staticmethod
    def _check_smtputf8(smtp: smtplib.SMTP, recipient: str) -> None:
        """Refuse an address only SMTPUTF8 can carry when the server does not offer it.

        The domain is ASCII by now (:func:`smtp_address`), so only a local part in another
        script (``żółw@…``) is left: the server cannot take this recipient, now or later.
        Our own sender address the same way is a setting to fix, retried like a refused login.
        """
        smtp.ehlo_or_helo_if_needed()
        if smtp.has_extn("smtputf8"):
            return
        if not recipient.isascii():
            raise DeliveryError(
                "recipient's address has a non-ASCII local part, which needs SMTPUTF8, "
                "and the server does not offer it",
                permanent=True,
            )
        raise DeliveryError(
            "MAIL_FROM has a non-ASCII local part, which needs SMTPUTF8, "
            "and the server does not offer it"
        )


class _Connection(smtplib.SMTP):
    """smtplib's client, waiting longer for the server's verdict on the message itself.

    After the end of the message (``<CRLF>.<CRLF>``) a server may take its time: it stores
    the message, scans it, hands it on. Giving up then does not take the message back: the
    server may well deliver it, while we count a failed try and send it again later, so the
    person gets two copies or more. RFC 5321 (§4.5.3.2.6) suggests a client waits 10 minutes
    for that reply; ``data_timeout`` (``SMTP_DATA_TIMEOUT_SECONDS``) is the wait, and every
    other reply keeps ``timeout``.
    """

    def __init__(self, host: str, port: int, timeout: float, data_timeout: float) -> None:
        self.data_timeout = data_timeout
        self._message_follows = False
        super().__init__(host, port, timeout=timeout)

    def getreply(self) -> tuple[int, bytes]:
        # 354 answers DATA alone (RFC 5321 §4.2.2), and the reply after it is the verdict on
        # the message; smtplib reads both through here.
        verdict, self._message_follows = self._message_follows, False
        if verdict and self.sock is not None:
            self.sock.settimeout(self.data_timeout)
        try:
            code, text = super().getreply()
        finally:
            if verdict and self.sock is not None:
                self.sock.settimeout(self.timeout)
        self._message_follows = code == 354
        return code, text

    def __exit__(self, *exc_info: object) -> None:
        # QUIT comes after the server's verdict: however it answers (or fails to), the message
        # is accepted or refused already, and an error here must not make it a failed try.
        try:
            super().__exit__(*exc_info)
        except (smtplib.SMTPException, OSError):
            self.close()


def smtp_address(address: str) -> str:
    """Return the address with its domain in ASCII (IDNA, ``xn--…``) where that is enough.

    The outbox keeps addresses as email_validator normalised them, with the domain in its
    Unicode form (``anna@żółw.pl``). Said so to an SMTP server, it needs the SMTPUTF8
    extension, which many relays lack, and the mail would never go; the ASCII form of the
    domain reaches the same mailbox through any server. A local part in another script has
    no ASCII form: such an address is returned as it is, and needs SMTPUTF8.
    """
    if address.isascii():
        return address
    try:
        ascii_form = validate_email(address, check_deliverability=False).ascii_email
    except EmailNotValidError:
        return address  # not for us to judge here; the server will say
    return ascii_form or address


_REFUSALS = {
    smtplib.SMTPDataError: "message refused",
    smtplib.SMTPSenderRefused: "sender refused",
    smtplib.SMTPAuthenticationError: "login refused",
}


def _refusal(what: str, code: int, text: bytes | str) -> str:
    """Say what the server refused, with its reply code and enhanced status code only.

    ``recipient refused: 550 5.1.1``. The reply's text is left out whole: servers quote the
    address in it, or only its local part, URL-encoded or not, and at times the mailbox
    owner's full name, in forms no masking can be sure to catch. The codes say what an
    operator needs (RFC 3463: 5.1.1 no such mailbox, 4.2.2 mailbox full, 5.7.1 refused by
    policy, …); the server's own log has the rest, for the time of the try.
    """
    if not 200 <= code < 600:  # smtplib's -1: a reply that did not start with a code
        return f"{what}: a reply without a valid code"
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    enhanced = _ENHANCED_STATUS.match(text)
    return f"{what}: {code} {enhanced.group(1)}" if enhanced else f"{what}: {code}"


class MaildirTransport:
    """Drop messages into a Maildir folder: the embedded default's mail, read on /dev/mail."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def deliver(self, message: EmailMessage) -> None:
        try:
            mailbox.Maildir(self.path, create=True).add(message)
        except OSError as error:
            raise DeliveryError(f"maildir not writable: {type(error).__name__}") from None


def transport_for(settings: Settings) -> Transport:
    """Return the transport ``MAIL_BACKEND`` names."""
    if settings.mail_backend == "maildir":
        return MaildirTransport(settings.maildir_path)
    if settings.mail_backend == "smtp":
        return SmtpTransport.from_settings(settings)
    raise ConfigError(f"MAIL_BACKEND must be smtp or maildir, not {settings.mail_backend!r}.")


# -- reading the Maildir (development) -----------------------------------------------------


@dataclass(frozen=True)
class DeliveredMail:
    """A message as its recipient reads it."""

    key: str
    message_id: str
    date: str
    sender: str
    recipient: str
    subject: str
    body: str


def maildir_messages(path: Path) -> list[DeliveredMail]:
    """Return the messages in a Maildir folder, newest first (for the development mail page)."""
    # The sender creates the folder and then its three subfolders: read while it does, a
    # Maildir not wholly there yet holds no message (mailbox would fail on the missing one).
    if not all((path / sub).is_dir() for sub in ("tmp", "new", "cur")):
        return []
    folder = mailbox.Maildir(path, factory=None, create=False)
    messages = []
    for key in folder.iterkeys():
        with folder.get_file(key) as handle:
            parsed = mailbox_message(handle.read())
        body = parsed.get_body(preferencelist=("plain",))
        messages.append(
            DeliveredMail(
                key=key,
                message_id=str(parsed["Message-ID"]),
                date=str(parsed["Date"]),
                sender=str(parsed["From"]),
                recipient=str(parsed["To"]),
                subject=str(parsed["Subject"]),
                body=body.get_content() if body is not None else "",
            )
        )
    return sorted(messages, key=lambda mail: _delivery_order(mail.key), reverse=True)


# Python's Maildir names a message "<seconds>.M<microseconds>P<pid>Q<count>.<host>", with the
# microseconds not zero-padded: as text, .M98765 sorts after .M123456 of the same second.
_MAILDIR_KEY = re.compile(r"(\d+)\.M(\d+)P\d+Q(\d+)")


def _delivery_order(key: str) -> tuple[int, int, int, str]:
    match = _MAILDIR_KEY.match(key)
    if match is None:
        return (0, 0, 0, key)
    seconds, micros, count = (int(group) for group in match.groups())
    return (seconds, micros, count, key)


def mailbox_message(raw: bytes) -> EmailMessage:
    """Parse a stored message with the modern API (decoded headers, ``get_content``)."""
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- the outbox, as the waiting page and the helpdesk read it -----------------------------


def latest_link_mail(session: Session, attempt_id: str) -> OutboxMessage | None:
    """The attempt's latest verification e-mail as the outbox holds it (sent, waiting,
    withdrawn or failed), or None when none was written."""
    return session.scalars(LATEST_LINK_MAIL, {"attempt": attempt_id}).first()


# -- the sender ----------------------------------------------------------------------------


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

        At most once per claim, at least once overall. The window between the server
        accepting the message and our ``sent_at`` commit cannot be closed: if this process
        dies (or the database is unreachable) right after the SMTP server said 250, the row
        still looks unsent, and once the lease runs out another sender delivers it again.
        The copies carry the same Message-ID (it is derived from the outbox row), so mail
        systems and clients that deduplicate on it show the person one message.
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
        """Wait twice as long after each failed try, capped, with up to half of it random.

        The jitter keeps many messages that failed together (a server restart) from all
        coming back in the same second.
        """
        ceiling = min(MAX_BACKOFF, self.retry_base * 2 ** (tries - 1))
        return ceiling / 2 + ceiling / 2 * self.rng.random()

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
        """Send due mail until ``stop`` is set, looking again every ``interval`` seconds.

        While the database keeps failing, the wait doubles after each failed pass, up to
        ``backoff_cap`` seconds (never below ``interval``), and the first pass that works
        brings it back to ``interval``.
        """
        log.info("mail.sender_started", backend=type(self.transport).__name__)
        failures = 0  # passes in a row that the database failed
        while not stop.is_set():
            wait = interval
            try:
                if self.has_due():
                    self.send_due(stop)
            except SQLAlchemyError as error:
                # The database restarting or failing over: a look five times a second would
                # fill the log with the same line. One line a failed pass, each saying how
                # long the sender now waits, and the waits grow.
                failures += 1
                wait = wait_after_failures(interval, failures, backoff_cap)
                log.error(
                    "mail.database_error",
                    error=type(error).__name__,
                    failures=failures,
                    retry_in_seconds=round(wait, 3),
                )
            except Exception:  # a bug: log it with its traceback, but keep sending the rest
                log.exception("mail.sender_pass_failed")
            else:
                worker_pass("mail")
                if failures:
                    log.info("mail.database_recovered", failures=failures)
                    failures = 0
            stop.wait(wait)
        log.info("mail.sender_stopped")


__all__ = [
    "DeliveredMail",
    "DeliveryError",
    "MaildirTransport",
    "OutboxSender",
    "SendReport",
    "SmtpTransport",
    "maildir_messages",
    "transport_for",
]
