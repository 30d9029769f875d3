"""The outbox sender: real SMTP on loopback, a Maildir, dead and refusing servers, two senders."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from tests.clock import Clock
from tests.conftest import make_settings
from tests.factories import ANNA, CountedStop, down_first, submit, user
from tests.integration.test_journey import to_email_entry
from tests.ports import free_port
from ueoz_migration.adapters.mail_transport import DeliveryError
from ueoz_migration.adapters.maildir import MaildirTransport, maildir_messages
from ueoz_migration.adapters.smtp import SmtpTransport
from ueoz_migration.bootstrap import Services
from ueoz_migration.cli import main
from ueoz_migration.db.engine import make_engine, make_sessionmaker, transaction
from ueoz_migration.db.models import OutboxMessage
from ueoz_migration.workers.outbox import OutboxSender

SUBJECT_PL = "UEOZ – potwierdź adres e-mail"


class Inbox:
    """An aiosmtpd handler that keeps what it accepts, or answers RCPT with a set reply."""

    def __init__(self, rcpt_reply: str | None = None) -> None:
        self.rcpt_reply = rcpt_reply
        self.received: list[tuple[list[str], bytes]] = []
        self.encrypted: list[bool] = []  # per message: did it come over TLS?

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), envelope.content))
        self.encrypted.append(session.ssl is not None)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(port: int, handler: Inbox, **options):
    """An aiosmtpd server on loopback; ``options`` go to its SMTP (TLS, authenticator…).

    aiosmtpd's Controller offers SMTPUTF8 unless told ``enable_SMTPUTF8=False``.
    """
    # aiosmtpd logs each connection on "mail.log" from its own thread; a command under test
    # would print those lines among its own, in no fixed order. Quiet while it runs.
    server_log = logging.getLogger("mail.log")
    was_disabled, server_log.disabled = server_log.disabled, True
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()
        server_log.disabled = was_disabled


def test_the_sender_keeps_trying_for_as_long_as_the_configured_link_works(tmp_path, database_url):
    services = Services(make_settings(tmp_path, database_url, VERIFICATION_LINK_TTL_HOURS="2"))
    try:
        awaiting_verification(services)
        clock = Clock()

        *retried, last = retry_until_given_up(
            smtp_sender(services, free_port(), clock), services, clock
        )

        (row,) = outbox(services)
        assert row.failed_at - row.created_at == timedelta(hours=2)
        assert row.last_error.startswith("not delivered while its link worked (2 h)")
        assert len(retried) >= 2 and last.failed == 1
    finally:
        services.engine.dispose()


def awaiting_verification(services: Services, email: str = "anna@example.pl") -> str:
    """Take Anna to `awaiting_verification`, which puts one verification e-mail in the outbox."""
    attempt = to_email_entry(services)
    submit(services, attempt.id, email=email)
    return attempt.id


def outbox(services: Services) -> list[OutboxMessage]:
    with services.sessions() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def smtp_sender(
    services: Services,
    port: int,
    clock: Clock,
    *,
    username: str = "",
    password: str = "",
    starttls: bool = False,
    ca_file: str = "",
    **options,
) -> OutboxSender:
    transport = SmtpTransport(
        "127.0.0.1",
        port,
        username=username,
        password=password,
        starttls=starttls,
        ca_file=ca_file,
        timeout=5,
    )
    return OutboxSender.from_settings(
        services.settings, services.sessions, transport=transport, clock=clock, **options
    )


def test_smtp_delivers_the_verification_email_as_the_person_reads_it(services):
    awaiting_verification(services)
    port = free_port()

    with smtp_server(port, Inbox()) as inbox:
        report = smtp_sender(services, port, Clock()).send_due()

    assert report.sent == 1
    ((recipients, raw),) = inbox.received
    assert recipients == ["anna@example.pl"]
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["To"] == "anna@example.pl"
    assert mail["From"] == "UEOZ <no-reply@ueoz.example>"
    assert mail["Subject"] == SUBJECT_PL
    assert mail["Message-ID"].endswith("@ueoz.example>")
    assert mail["Date"]
    assert mail.get_content_charset() == "utf-8"
    body = mail.get_content()
    assert "Dzień dobry Anna Maria Mickiewicz-Sokołowska" in body
    assert "http://localhost/weryfikacja/" in body
    (row,) = outbox(services)
    assert row.sent_at is not None and row.tries == 1 and row.last_error == ""
    # Delivered, the link and the name are the person's alone: the outbox keeps no copy.
    assert (row.subject, row.body) == (SUBJECT_PL, "")


def test_a_dead_server_means_later_and_nothing_is_lost(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    sender = smtp_sender(services, port, clock)

    report = sender.send_due()

    assert (report.sent, report.retried) == (0, 1)
    (row,) = outbox(services)
    assert (row.tries, row.sent_at, row.failed_at) == (1, None, None)
    assert row.last_error == "server unreachable: ConnectionRefusedError"
    base = services.settings.mail_retry_base
    assert clock.now + base / 2 <= row.due_at <= clock.now + base
    # Not due yet: another pass before the backoff ends leaves it alone.
    assert sender.send_due().claimed == 0

    clock.advance(base)
    with smtp_server(port, Inbox()) as inbox:
        assert sender.send_due().sent == 1
    assert len(inbox.received) == 1
    (row,) = outbox(services)
    assert (row.tries, row.failed_at) == (2, None)
    assert row.sent_at is not None


def test_the_wait_doubles_after_each_failed_try(services):
    awaiting_verification(services)
    clock = Clock()
    sender = smtp_sender(services, free_port(), clock)
    waits = []
    for _ in range(4):
        sender.send_due()
        (row,) = outbox(services)
        waits.append(row.due_at - clock.now)
        clock.advance(row.due_at - clock.now)

    base = services.settings.mail_retry_base
    for tries, wait in enumerate(waits, start=1):
        ceiling = base * 2 ** (tries - 1)
        assert ceiling / 2 <= wait <= ceiling


def retry_until_given_up(sender: OutboxSender, services: Services, clock: Clock) -> list:
    """Run the sender each time the message comes due, until it is no longer to be retried.

    Returns each pass's report; the clock ends where the last pass ran.
    """
    reports = []
    while True:
        reports.append(sender.send_due())
        (row,) = outbox(services)
        if row.failed_at is not None or row.sent_at is not None or len(reports) > 200:
            return reports
        clock.advance(row.due_at - clock.now)


def test_a_dead_server_is_tried_for_as_long_as_the_link_works_then_the_operators_told(services):
    awaiting_verification(services)
    clock = Clock()
    sender = smtp_sender(services, free_port(), clock)  # nothing listens there

    with structlog.testing.capture_logs() as logs:
        reports = retry_until_given_up(sender, services, clock)

    # Tried again and again for the link's 24 hours (the waits capped at an hour)…
    *retried, last = reports
    assert len(retried) > 24 and all(report.retried == 1 for report in retried)
    (row,) = outbox(services)
    assert row.failed_at - row.created_at == services.settings.verification_link_ttl
    assert (row.sent_at, row.tries) == (None, len(retried))
    # …then failed for good the moment the link expired, with no try of a dead link.
    assert (last.sent, last.retried, last.failed) == (0, 0, 1)
    assert row.last_error == (
        "not delivered while its link worked (24 h); "
        "last error: server unreachable: ConnectionRefusedError"
    )
    (failed,) = [entry for entry in logs if entry["event"] == "mail.failed"]
    assert failed["log_level"] == "error"
    assert failed["to"] == "a***@example.pl"
    assert "anna@example.pl" not in repr(logs)
    clock.advance(timedelta(days=1))
    assert sender.send_due().claimed == 0


def test_a_server_that_says_try_later_gets_the_message_later(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()

    with smtp_server(port, Inbox("450 4.2.1 <anna@example.pl>: mailbox busy")):
        report = smtp_sender(services, port, clock).send_due()

    assert report.retried == 1
    (row,) = outbox(services)
    assert row.failed_at is None and row.due_at > clock.now
    assert row.last_error == "recipient refused: 450 4.2.1"


class SlowVerdict(Inbox):
    """A server that keeps the message at once and says so only after ``delay`` seconds.

    As one that scans or hands on each message before it answers the end of DATA; ``meanwhile``
    runs while it keeps the sender waiting.
    """

    def __init__(self, delay: float = 0.0, meanwhile=lambda: None) -> None:
        super().__init__()
        self.delay, self.meanwhile = delay, meanwhile

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        self.meanwhile()
        await asyncio.sleep(self.delay)
        return reply


def smtp_services(tmp_path, database_url, port: int, **more: str) -> Services:
    """Services whose mail goes over SMTP to loopback ``port``, as settings configure it."""
    settings = make_settings(
        tmp_path, database_url, MAIL_BACKEND="smtp", SMTP_PORT=str(port), **more
    )
    return Services(settings)


def test_a_server_slow_to_accept_the_message_gets_it_once(tmp_path, database_url):
    # The server answers the end of DATA after 2.5 s, past the 1 s every other reply gets:
    # the sender waits for that answer, the message is sent, and nothing goes twice.
    port = free_port()
    services = smtp_services(
        tmp_path, database_url, port, SMTP_TIMEOUT_SECONDS="1", SMTP_DATA_TIMEOUT_SECONDS="30"
    )
    try:
        awaiting_verification(services)
        clock = Clock()
        sender = OutboxSender.from_settings(services.settings, services.sessions, clock=clock)

        with smtp_server(port, SlowVerdict(delay=2.5)) as inbox:
            report = sender.send_due()
            clock.advance(timedelta(hours=1))  # past any retry that would have been due
            later = sender.send_due()

        assert (report.sent, report.retried, later.claimed) == (1, 0, 0)
        assert len(inbox.received) == 1
        (row,) = outbox(services)
        assert row.sent_at is not None and row.tries == 1 and row.last_error == ""
    finally:
        services.engine.dispose()


def test_no_other_sender_takes_a_message_whose_sender_awaits_the_servers_verdict(
    tmp_path, database_url
):
    # A server may take SMTP_DATA_TIMEOUT_SECONDS (here 15 minutes) to accept a message: the
    # message's lease outlasts that wait, or a second sender would deliver it again.
    port = free_port()
    services = smtp_services(
        tmp_path, database_url, port, SMTP_TIMEOUT_SECONDS="1", SMTP_DATA_TIMEOUT_SECONDS="900"
    )
    try:
        awaiting_verification(services)
        clock, taken_over = Clock(), []

        class Recording:
            def deliver(self, message):
                taken_over.append(message["To"])

        other = OutboxSender.from_settings(
            services.settings, services.sessions, transport=Recording(), clock=clock
        )

        def fourteen_minutes_later():
            clock.advance(timedelta(minutes=14))  # the first sender still waits
            other.send_due()

        first = OutboxSender.from_settings(services.settings, services.sessions, clock=clock)
        with smtp_server(port, SlowVerdict(meanwhile=fourteen_minutes_later)) as inbox:
            report = first.send_due()

        assert report.sent == 1 and len(inbox.received) == 1
        assert taken_over == []
        (row,) = outbox(services)
        assert row.sent_at is not None and row.tries == 1
    finally:
        services.engine.dispose()


def test_a_server_that_fumbles_quit_after_taking_the_message_gets_it_once(services):
    # The message was accepted (250) before QUIT: however the server answers QUIT, the
    # message went, and sending it again would give the person a second copy.
    awaiting_verification(services)
    port, clock = free_port(), Clock()

    class FumblingQuit(Inbox):
        async def handle_QUIT(self, server, session, envelope):
            return "421 4.3.2 shutting down"

    with smtp_server(port, FumblingQuit()) as inbox:
        report = smtp_sender(services, port, clock).send_due()
        clock.advance(timedelta(hours=1))
        later = smtp_sender(services, port, clock).send_due()

    assert (report.sent, later.claimed) == (1, 0)
    assert len(inbox.received) == 1
    (row,) = outbox(services)
    assert row.sent_at is not None and row.last_error == ""


def test_a_server_that_refuses_the_mailbox_for_good_is_not_asked_again(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()

    with smtp_server(port, Inbox("550 5.1.1 <anna@example.pl>: no such user")):
        report = smtp_sender(services, port, clock).send_due()

    assert report.failed == 1
    (row,) = outbox(services)
    assert row.failed_at is not None and row.tries == 1
    assert row.last_error == "recipient refused: 550 5.1.1"
    assert row.body == ""  # never composed again: the link and the name are not kept


def test_a_reply_without_a_valid_code_is_tried_again_and_never_quoted(services):
    # A broken relay answers RCPT with text only, quoting the address: the operator is told
    # what kind of reply it was; the address stays out of the row and the log.
    awaiting_verification(services)
    port, clock = free_port(), Clock()

    relay = Inbox("unknown user anna@example.pl, sorry")
    with smtp_server(port, relay), structlog.testing.capture_logs() as logs:
        report = smtp_sender(services, port, clock).send_due()

    assert (report.retried, report.failed) == (1, 0)
    (row,) = outbox(services)
    assert row.failed_at is None and row.due_at > clock.now
    assert row.last_error == "recipient refused: a reply without a valid code"
    assert "anna" not in repr(logs)


def test_a_server_that_offers_no_login_in_clear_points_at_the_settings(services):
    # SMTP_USERNAME set, SMTP_STARTTLS forgotten: the server offers AUTH only over TLS.
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    server = {"authenticator": Accounts(ueoz="secret")}  # auth_require_tls: aiosmtpd's default

    with smtp_server(port, Inbox(), **server) as inbox:
        report = smtp_sender(services, port, clock, username="ueoz", password="secret").send_due()

    assert (report.sent, report.retried, report.failed) == (0, 1, 0)
    assert inbox.received == []
    (row,) = outbox(services)
    assert row.failed_at is None and row.due_at > clock.now
    assert row.last_error == (
        "server offers no login (AUTH) here: check SMTP_USERNAME and SMTP_STARTTLS"
    )


class Accounts:
    """An aiosmtpd authenticator that knows one password per login."""

    def __init__(self, **passwords: str) -> None:
        self.passwords = passwords

    def __call__(self, server, session, envelope, mechanism, auth_data):
        known = isinstance(auth_data, LoginPassword) and (
            self.passwords.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=known, handled=False, auth_data=auth_data)


class SenderCheck(Inbox):
    """A server that takes mail from one sender address only (5xx to any other)."""

    def __init__(self, allowed: str) -> None:
        super().__init__()
        self.allowed = allowed

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address != self.allowed:
            return f"553 5.7.1 <{address}>: sender address not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


def test_a_login_refused_for_most_of_a_day_loses_no_message(services):
    # The operator notices the wrong SMTP_PASSWORD only the next morning: the link works
    # for 24 hours, so the message is still worth sending, and is sent.
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    server = {"authenticator": Accounts(ueoz="right"), "auth_require_tls": False}
    wrong = smtp_sender(services, port, clock, username="ueoz", password="wrong")

    with smtp_server(port, Inbox(), **server) as inbox:
        (row,) = outbox(services)
        fixed_at = row.created_at + timedelta(hours=23)
        passes = 0
        while clock.now < fixed_at:
            assert wrong.send_due().retried == 1
            passes += 1
            (row,) = outbox(services)
            assert (row.failed_at, row.sent_at) == (None, None)
            assert row.last_error == "login refused: 535 5.7.8"
            clock.advance(row.due_at - clock.now)

        fixed = smtp_sender(services, port, clock, username="ueoz", password="right")
        assert fixed.send_due().sent == 1

    ((recipients, _raw),) = inbox.received
    assert recipients == ["anna@example.pl"]
    (row,) = outbox(services)
    assert (row.tries, row.failed_at, row.last_error) == (passes + 1, None, "")


def test_a_refused_login_is_a_setting_to_fix_and_loses_no_message(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    server = {"authenticator": Accounts(ueoz="right"), "auth_require_tls": False}

    wrong = smtp_sender(services, port, clock, username="ueoz", password="wrong")

    with smtp_server(port, Inbox(), **server) as inbox:
        with structlog.testing.capture_logs() as logs:
            report = wrong.send_due()

        assert (report.retried, report.failed) == (1, 0)
        (row,) = outbox(services)
        assert (row.failed_at, row.sent_at) == (None, None)
        assert row.last_error == "login refused: 535 5.7.8"
        assert row.due_at > clock.now
        assert [entry["event"] for entry in logs] == ["mail.retry"]  # no mail.failed

        clock.advance(timedelta(hours=1))  # meanwhile the operator fixed SMTP_PASSWORD
        fixed = smtp_sender(services, port, clock, username="ueoz", password="right")
        assert fixed.send_due().sent == 1

    ((recipients, _raw),) = inbox.received
    assert recipients == ["anna@example.pl"]
    (row,) = outbox(services)
    assert (row.tries, row.failed_at) == (2, None)


def test_a_refused_sender_address_is_a_setting_to_fix_and_loses_no_message(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()

    with smtp_server(port, SenderCheck("no-reply@ueoz.gov.pl")) as inbox:
        report = smtp_sender(services, port, clock).send_due()  # MAIL_FROM no-reply@ueoz.example

        assert (report.retried, report.failed) == (1, 0)
        (row,) = outbox(services)
        assert (row.failed_at, row.sent_at) == (None, None)
        assert row.last_error == "sender refused: 553 5.7.1"

        clock.advance(timedelta(hours=1))  # meanwhile the operator fixed MAIL_FROM
        fixed = smtp_sender(services, port, clock, mail_from="UEOZ <no-reply@ueoz.gov.pl>")
        assert fixed.send_due().sent == 1

    ((recipients, _raw),) = inbox.received
    assert recipients == ["anna@example.pl"]


def test_the_wait_stops_growing_at_an_hour_give_or_take_its_jitter(services):
    awaiting_verification(services)
    clock = Clock()
    sender = smtp_sender(services, free_port(), clock, rng=random.Random(7))
    waits = []
    for _ in range(12):
        assert sender.send_due().retried == 1
        (row,) = outbox(services)
        waits.append(row.due_at - clock.now)
        clock.advance(row.due_at - clock.now)

    base = services.settings.mail_retry_base
    assert base * 2**11 > timedelta(hours=5)  # uncapped, the last waits would be hours
    assert all(wait <= timedelta(hours=1) for wait in waits)
    capped = [w for n, w in enumerate(waits, 1) if base * 2 ** (n - 1) >= timedelta(hours=1)]
    assert len(capped) >= 4
    assert all(timedelta(minutes=30) <= wait for wait in capped)
    assert len(set(capped)) == len(capped)  # jittered: they do not all come back at once


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for ``host`` (an IP address or a name), and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        subject: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([subject]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def starttls_server_options(folder: Path, host: str = "127.0.0.1") -> tuple[Path, dict]:
    """A server that offers STARTTLS and takes no mail before it; and its certificate."""
    cert_path, key_path = self_signed_certificate(folder, host)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, {"tls_context": context, "require_starttls": True}


def test_smtp_starttls_sends_over_a_verified_encrypted_connection(services, settings, tmp_path):
    # The relay's certificate is issued by a private authority: SMTP_CA_FILE names it.
    awaiting_verification(services)
    port = free_port()
    cert_path, tls = starttls_server_options(tmp_path)
    smtp_settings = make_settings(
        tmp_path,
        settings.database_url,
        MAIL_BACKEND="smtp",
        SMTP_PORT=str(port),
        SMTP_STARTTLS="1",
        SMTP_CA_FILE=str(cert_path),
        SMTP_USERNAME="ueoz",
        SMTP_PASSWORD="secret",
    )
    # The server offers AUTH only once the connection is encrypted (aiosmtpd's default).
    server = {**tls, "authenticator": Accounts(ueoz="secret")}

    with smtp_server(port, Inbox(), **server) as inbox:
        report = OutboxSender.from_settings(smtp_settings, services.sessions).send_due()

    assert report.sent == 1
    ((recipients, _raw),) = inbox.received
    assert recipients == ["anna@example.pl"]
    assert inbox.encrypted == [True]
    (row,) = outbox(services)
    assert row.sent_at is not None and row.last_error == ""


def test_smtp_starttls_refuses_a_certificate_it_cannot_verify(services, tmp_path):
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    _cert_path, tls = starttls_server_options(tmp_path)  # the system's CAs do not know it

    with smtp_server(port, Inbox(), **tls) as inbox:
        report = smtp_sender(services, port, clock, starttls=True).send_due()

    assert (report.sent, report.retried) == (0, 1)
    assert inbox.received == []
    (row,) = outbox(services)
    assert row.failed_at is None and row.due_at > clock.now
    assert row.last_error == "TLS with the server failed: SSLCertVerificationError"


def test_smtp_starttls_refuses_a_trusted_certificate_for_another_host(services, tmp_path):
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    cert_path, tls = starttls_server_options(tmp_path, host="smtp.elsewhere.example")

    with smtp_server(port, Inbox(), **tls) as inbox:  # trusted, but not for 127.0.0.1
        report = smtp_sender(
            services, port, clock, starttls=True, ca_file=str(cert_path)
        ).send_due()

    assert (report.sent, report.retried) == (0, 1)
    assert inbox.received == []
    (row,) = outbox(services)
    assert row.last_error == "TLS with the server failed: SSLCertVerificationError"


def test_smtp_starttls_to_a_server_without_it_sends_nothing_in_clear(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()

    with smtp_server(port, Inbox()) as inbox:  # offers no STARTTLS
        report = smtp_sender(services, port, clock, starttls=True).send_due()

    assert (report.sent, report.retried) == (0, 1)
    assert inbox.received == []
    (row,) = outbox(services)
    assert row.failed_at is None and row.due_at > clock.now
    assert row.last_error == "server offers no STARTTLS: nothing sent in clear"


@pytest.mark.parametrize("smtputf8", [False, True], ids=["plain-server", "smtputf8-server"])
def test_an_address_with_a_polish_domain_arrives_through_any_server(services, smtputf8):
    # email_validator keeps the domain in its Unicode form; over SMTP it goes as IDNA ASCII,
    # which needs no SMTPUTF8 from this relay or any after it.
    awaiting_verification(services, email="anna@żółw.pl")
    port, clock = free_port(), Clock()

    with smtp_server(port, Inbox(), enable_SMTPUTF8=smtputf8) as inbox:
        report = smtp_sender(services, port, clock).send_due()

    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    ((recipients, raw),) = inbox.received
    assert recipients == ["anna@xn--w-uga1v8h.pl"]
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["To"] == "anna@xn--w-uga1v8h.pl"
    assert "Dzień dobry Anna Maria Mickiewicz-Sokołowska" in mail.get_content()
    (row,) = outbox(services)
    assert row.recipient == "a***@żółw.pl"  # as the person gave it, masked once sent
    assert row.sent_at is not None and row.last_error == ""


def test_a_non_ascii_mailbox_name_arrives_through_a_server_with_smtputf8(services):
    awaiting_verification(services, email="żółw@example.pl")
    port = free_port()

    with smtp_server(port, Inbox(), enable_SMTPUTF8=True) as inbox:
        report = smtp_sender(services, port, Clock()).send_due()

    assert report.sent == 1
    ((recipients, raw),) = inbox.received
    assert recipients == ["żółw@example.pl"]
    assert message_from_bytes(raw, policy=policy.default)["To"] == "żółw@example.pl"


def test_a_non_ascii_mailbox_name_fails_at_once_at_a_server_without_smtputf8(services, settings):
    # No other form of this address exists: no retry can help, and the failure says why
    # (not STARTTLS, which is off).
    awaiting_verification(services, email="żółw@example.pl")
    port = free_port()

    with smtp_server(port, Inbox(), enable_SMTPUTF8=False) as inbox:
        result = CliRunner().invoke(
            main, ["mail-sender", "--once"], env=smtp_environ(settings, port)
        )

    assert result.exit_code == 1
    assert result.output.splitlines()[-2:] == [
        "sent 0, to retry 0, failed 1",
        "Error: 1 message(s) failed for good; see the log (mail.failed)",
    ]
    assert inbox.received == []
    (row,) = outbox(services)
    assert (row.tries, row.sent_at) == (1, None) and row.failed_at is not None
    assert row.last_error == (
        "recipient's address has a non-ASCII local part, which needs SMTPUTF8, "
        "and the server does not offer it"
    )


def test_a_message_the_sender_cannot_compose_holds_up_no_other_and_fails_after_max_tries(
    services,
):
    # A fault of the service's own (here: a transport that raises what it should not) is
    # not the server's doing: it is logged with its traceback, the batch goes on, and the
    # message is given up after MAIL_MAX_TRIES tries rather than tried for the link's life.
    queue_messages(services, 3)
    clock = Clock()

    class Faulty:
        def __init__(self) -> None:
            self.delivered: list[str] = []

        def deliver(self, message):
            if message["To"] == "person0@example.pl":
                raise ValueError("a bug")
            self.delivered.append(message["To"])

    transport = Faulty()
    sender = OutboxSender.from_settings(
        services.settings, services.sessions, transport=transport, clock=clock, max_tries=3
    )

    with structlog.testing.capture_logs() as logs:
        first = sender.send_due()
        later = []
        for _ in range(2):
            clock.advance(timedelta(hours=1))
            later.append(sender.send_due())

    assert (first.sent, first.retried, first.failed) == (2, 1, 0)
    assert transport.delivered == ["person1@example.pl", "person2@example.pl"]
    assert [(report.retried, report.failed) for report in later] == [(1, 0), (0, 1)]
    faulty = outbox(services)[0]
    assert (faulty.tries, faulty.sent_at) == (3, None) and faulty.failed_at is not None
    assert faulty.last_error == "unexpected error: ValueError"
    unexpected = [entry for entry in logs if entry["event"] == "mail.unexpected_error"]
    assert len(unexpected) == 3 and unexpected[0]["log_level"] == "error"


def test_maildir_delivery_is_readable_as_the_mail_page_shows_it(services, tmp_path):
    awaiting_verification(services)
    sender = OutboxSender.from_settings(
        services.settings, services.sessions, transport=MaildirTransport(tmp_path / "mail")
    )

    assert sender.send_due().sent == 1

    (mail,) = maildir_messages(tmp_path / "mail")
    assert (mail.recipient, mail.subject) == ("anna@example.pl", SUBJECT_PL)
    assert "Centrum e-Zdrowia" in mail.body


def test_a_maildir_still_being_created_reads_as_empty(tmp_path):
    # The sender makes the folder, then tmp, new and cur: the mail page (or a test) reading
    # in between finds no message rather than an error.
    folder = tmp_path / "mail"
    (folder / "tmp").mkdir(parents=True)
    (folder / "new").mkdir()

    assert maildir_messages(folder) == []
    assert maildir_messages(tmp_path / "none") == []


def test_the_development_mail_page_lists_the_newest_message_first(tmp_path):
    # Two messages within one second: Maildir's names then differ in unpadded microseconds.
    folder = tmp_path / "mail"
    folder.mkdir()
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir()
    for name, to in (
        ("1764120000.M98765P10Q1.host", "older@example.pl"),
        ("1764120000.M123456P10Q2.host", "newer@example.pl"),
        ("1764119999.M999999P10Q9.host", "oldest@example.pl"),
    ):
        (folder / "new" / name).write_bytes(
            f"From: UEOZ <no-reply@ueoz.example>\nTo: {to}\nSubject: s\n\nb\n".encode()
        )

    assert [mail.recipient for mail in maildir_messages(folder)] == [
        "newer@example.pl",
        "older@example.pl",
        "oldest@example.pl",
    ]


def test_the_whole_path_ends_as_one_message_whose_link_verifies(services):
    """Submit an address, run the sender, read the Maildir, follow the link: done."""
    attempt_id = awaiting_verification(services)
    sender = OutboxSender.from_settings(services.settings, services.sessions)
    assert services.settings.mail_backend == "maildir"  # the embedded default

    sender.send_due()
    sender.send_due()  # a second pass finds nothing more to send

    (mail,) = maildir_messages(services.settings.maildir_path)
    assert mail.recipient == "anna@example.pl"
    link = next(word for word in mail.body.split() if "/weryfikacja/" in word)
    assert link.startswith("http://localhost/weryfikacja/")
    token = link.rsplit("/", 1)[1]
    attempt = services.journey.fire(attempt_id, "verify", actor=user(), token=token)
    assert attempt.state == "done"


def queue_messages(services: Services, count: int) -> None:
    """Put ``count`` due messages, to person0@… person{count-1}@example.pl, in the outbox."""
    attempt_id = services.journey.start(ANNA, actor=user()).id
    now = datetime.now(UTC)
    with transaction(services.sessions) as session:
        for number in range(count):
            session.add(
                OutboxMessage(
                    attempt_id=attempt_id,
                    kind="verification",
                    recipient=f"person{number}@example.pl",
                    subject="s",
                    body="b",
                    created_at=now,
                    due_at=now,
                )
            )


def test_a_batch_that_outlasts_its_lease_is_not_sent_twice(services):
    # A server that answers every command just inside the timeout makes a batch outlast the
    # lease it was claimed under: a second sender claims the rest meanwhile. Whatever it
    # took, the first one must not send as well.
    queue_messages(services, 3)
    clock, delivered = Clock(), []
    lease = timedelta(minutes=1)

    class Quick:
        def deliver(self, message):
            delivered.append(("second", message["To"]))

    second = OutboxSender(
        services.sessions, Quick(), mail_from="UEOZ <no-reply@ueoz.example>", clock=clock
    )

    class Slow:
        def deliver(self, message):
            delivered.append(("first", message["To"]))
            clock.advance(timedelta(seconds=40))  # each message takes 40 s of a 60 s lease
            if len(delivered) == 2:
                # The batch's lease is over for the third message: another sender takes it.
                assert second.send_due().sent == 1

    first = OutboxSender(
        services.sessions,
        Slow(),
        mail_from="UEOZ <no-reply@ueoz.example>",
        clock=clock,
        lease=lease,
    )

    report = first.send_due()

    assert report.sent == 2
    assert delivered == [
        ("first", "person0@example.pl"),
        ("first", "person1@example.pl"),
        ("second", "person2@example.pl"),
    ]
    assert all(row.sent_at is not None and row.tries == 1 for row in outbox(services))


def test_two_senders_at_once_never_deliver_a_message_twice(services, settings):
    queue_messages(services, 24)

    delivered: list[str] = []
    lock = threading.Lock()

    class SlowTransport:
        def deliver(self, message):
            time.sleep(0.005)  # long enough for the other sender to try the same rows
            with lock:
                delivered.append(message["Message-ID"])

    # Two service instances: two engines, as two processes on two machines would have. Each
    # transaction dawdles before it commits, so that the claims overlap and a claim that
    # did not lock what it read would hand the same rows to both senders.
    other = Services(settings)
    senders = []
    for each in (services, other):
        sessions = make_sessionmaker(each.engine)
        event.listen(sessions, "before_commit", lambda _session: time.sleep(0.01))
        senders.append(
            OutboxSender.from_settings(each.settings, sessions, transport=SlowTransport(), batch=3)
        )
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(sender: OutboxSender) -> None:
        try:
            start.wait()
            sender.send_due()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    other.engine.dispose()

    assert errors == []
    assert len(delivered) == 24
    assert Counter(delivered).most_common(1)[0][1] == 1
    assert all(row.sent_at is not None for row in outbox(services))


def test_mail_sender_once_from_the_command_line(services, settings):
    awaiting_verification(services)
    environ = {
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "INSTANCE_DIR": str(settings.instance_dir),
        "SECRET_KEY": "test-secret",
        "AUDIT_KEY": settings.audit_key.decode(),
        "MAILDIR_PATH": str(settings.maildir_path),
    }

    result = CliRunner().invoke(main, ["mail-sender", "--once"], env=environ)

    assert result.exit_code == 0, result.output
    assert "sent 1, to retry 0, failed 0" in result.output.splitlines()
    assert len(maildir_messages(settings.maildir_path)) == 1


def smtp_environ(settings, port: int, **more: str) -> dict[str, str]:
    """The environment of `ueoz-migration mail-sender` sending to an SMTP server on ``port``."""
    return {
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "INSTANCE_DIR": str(settings.instance_dir),
        "SECRET_KEY": "test-secret",
        "AUDIT_KEY": settings.audit_key.decode(),
        "MAIL_BACKEND": "smtp",
        "SMTP_PORT": str(port),
        **more,
    }


def test_mail_sender_once_exits_1_when_a_message_failed_for_good(services, settings):
    awaiting_verification(services)
    port = free_port()

    with smtp_server(port, Inbox("550 5.1.1 <anna@example.pl>: no such user")):
        result = CliRunner().invoke(
            main, ["mail-sender", "--once"], env=smtp_environ(settings, port)
        )

    assert result.exit_code == 1
    assert result.output.splitlines()[-2:] == [  # after the log lines
        "sent 0, to retry 0, failed 1",
        "Error: 1 message(s) failed for good; see the log (mail.failed)",
    ]


def test_mail_sender_once_sends_no_link_that_expired_while_no_sender_ran(services, settings):
    # Every sender was stopped for a day: the link in the message is dead, so it is not sent,
    # and the operator is told (exit 1), whatever the old MAIL_MAX_TRIES says.
    attempt_id = awaiting_verification(services)
    with transaction(services.sessions) as session:
        row = session.scalars(select(OutboxMessage)).one()
        row.created_at = row.due_at = datetime.now(UTC) - timedelta(hours=25)
    port = free_port()

    with smtp_server(port, Inbox()) as inbox:
        result = CliRunner().invoke(
            main, ["mail-sender", "--once"], env=smtp_environ(settings, port, MAIL_MAX_TRIES="99")
        )

    assert result.exit_code == 1
    assert "sent 0, to retry 0, failed 1" in result.output.splitlines()
    assert inbox.received == []
    (row,) = outbox(services)
    assert (row.attempt_id, row.tries, row.sent_at) == (attempt_id, 0, None)
    assert row.failed_at is not None
    assert row.last_error == "not delivered while its link worked (24 h)"


def test_a_command_on_a_database_never_upgraded_says_so_in_one_line(tmp_path):
    environ = {"APP_ENV": "test", "INSTANCE_DIR": str(tmp_path), "AUDIT_KEY": "k" * 32}

    for command in (["mail-sender", "--once"], ["worker", "--once"], ["eploz", "seed-demo"]):
        result = CliRunner().invoke(main, command, env=environ)

        assert result.exit_code == 1, command
        (line,) = result.output.splitlines()
        assert line.startswith("Error: cannot "), command
        assert "no such table" in line and "ueoz-migration db upgrade" in line, command


def test_upgrading_an_unreachable_database_says_so_in_one_line(tmp_path):
    environ = {
        "APP_ENV": "test",
        "INSTANCE_DIR": str(tmp_path),
        "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/ueoz?connect_timeout=2",
    }

    result = CliRunner().invoke(main, ["db", "upgrade"], env=environ)

    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: cannot upgrade the database (")
    assert line.endswith("is it reachable?")


def test_a_sender_told_to_stop_begins_no_further_message(services):
    # A backlog must not keep a stopping sender (SIGTERM) at work until it is killed.
    queue_messages(services, 3)
    stop, delivered = threading.Event(), []

    class StopAfterOne:
        def deliver(self, message):
            delivered.append(message["To"])
            stop.set()

    sender = OutboxSender(services.sessions, StopAfterOne(), mail_from="UEOZ <no-reply@x.pl>")
    report = sender.send_due(stop)

    assert (report.sent, delivered) == (1, ["person0@example.pl"])
    assert sum(row.sent_at is None for row in outbox(services)) == 2
    # The rest of its batch is let go: the next sender need not wait for the lease.
    assert all(row.lease_until is None for row in outbox(services))
    other = OutboxSender(services.sessions, StopAfterOne(), mail_from="UEOZ <no-reply@x.pl>")
    assert other.send_due().sent == 2


def test_a_database_lost_half_way_through_a_batch_holds_up_only_the_message_in_hand(services):
    # The sender's connection drops as it records the first delivery: that message keeps its
    # lease (nobody can tell whether it went); the rest go to the next sender at once.
    queue_messages(services, 3)
    clock, delivered = Clock(), []

    class Server:
        def __init__(self, name: str) -> None:
            self.name = name

        def deliver(self, message):
            delivered.append((self.name, message["To"]))

    def lose_the_connection(connection, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE outbox") and "sent_at" in statement.split("WHERE")[0]:
            raise OperationalError(statement, {}, Exception("server closed the connection"))

    first = OutboxSender(
        services.sessions, Server("first"), mail_from="UEOZ <no-reply@x.pl>", clock=clock
    )
    event.listen(services.engine, "before_cursor_execute", lose_the_connection)
    try:
        with pytest.raises(OperationalError):
            first.send_due()
    finally:
        event.remove(services.engine, "before_cursor_execute", lose_the_connection)

    second = OutboxSender(
        services.sessions, Server("second"), mail_from="UEOZ <no-reply@x.pl>", clock=clock
    )
    assert second.send_due().sent == 2
    assert delivered == [
        ("first", "person0@example.pl"),
        ("second", "person1@example.pl"),
        ("second", "person2@example.pl"),
    ]
    in_hand, *rest = outbox(services)
    assert in_hand.sent_at is None and in_hand.lease_until is not None
    assert all(row.sent_at is not None for row in rest)


@pytest.mark.parametrize("first_try", ["refused", "delivered"])
def test_a_try_that_outlasts_its_lease_never_leaves_a_sent_message_failed(services, first_try):
    # The first sender's server takes longer than the lease, and a second sender takes the
    # message over meanwhile. One of the two servers takes it: the row then says sent, not
    # failed, whichever answered first.
    queue_messages(services, 1)
    clock, delivered = Clock(), []
    refusal = DeliveryError("recipient refused: 550 5.1.1", permanent=True)

    class Second:
        def deliver(self, message):
            if first_try == "delivered":
                raise refusal
            delivered.append("second")

    second = OutboxSender(
        services.sessions, Second(), mail_from="UEOZ <no-reply@x.pl>", clock=clock
    )

    class SlowFirst:
        def deliver(self, message):
            clock.advance(timedelta(minutes=2))  # past the 1-minute lease
            second.send_due()
            if first_try == "refused":
                raise refusal
            delivered.append("first")

    first = OutboxSender(
        services.sessions,
        SlowFirst(),
        mail_from="UEOZ <no-reply@x.pl>",
        clock=clock,
        lease=timedelta(minutes=1),
    )
    with structlog.testing.capture_logs() as logs:
        report = first.send_due()

    (row,) = outbox(services)
    assert row.sent_at is not None and row.failed_at is None
    assert delivered == ["second" if first_try == "refused" else "first"]
    if first_try == "refused":
        assert (report.sent, report.failed) == (0, 0)
        assert [entry["event"] for entry in logs] == ["mail.sent", "mail.lease_lost"]
        assert row.last_error == ""
    else:
        assert report.sent == 1


def test_an_unknown_mail_backend_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        main,
        ["mail-sender", "--once"],
        env={"INSTANCE_DIR": str(tmp_path), "MAIL_BACKEND": "carrier-pigeon"},
    )

    assert result.exit_code == 1
    assert "MAIL_BACKEND must be smtp or maildir" in result.output
    assert "Traceback" not in result.output


def test_the_sender_loop_delivers_and_stops_cleanly_on_sigterm(services, settings):
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "INSTANCE_DIR": str(settings.instance_dir),
        "AUDIT_KEY": settings.audit_key.decode(),
        "MAILDIR_PATH": str(settings.maildir_path),
    }
    sender = subprocess.Popen(
        [str(Path(sys.executable).with_name("ueoz-migration")), "mail-sender", "--interval", "0.1"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        awaiting_verification(services)  # queued while the loop already runs
        deadline = time.monotonic() + 20
        while not maildir_messages(settings.maildir_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        sender.send_signal(signal.SIGTERM)
        output, _ = sender.communicate(timeout=20)
    finally:
        if sender.poll() is None:  # it did not stop: end it, and close its pipe too
            sender.kill()
            sender.communicate()

    assert sender.returncode == 0, output
    assert "mail.sender_stopped" in output
    assert [mail.recipient for mail in maildir_messages(settings.maildir_path)] == [
        "anna@example.pl"
    ]


def test_a_database_down_is_one_line_a_pass_and_the_sender_carries_on():
    # An operator reads one line per look while the database restarts, not a traceback.
    dead = make_engine(f"postgresql://ueoz@127.0.0.1:{free_port()}/ueoz")
    sender = OutboxSender(
        make_sessionmaker(dead),
        Inbox(),
        mail_from="UEOZ <no-reply@x.pl>",  # never reached
    )
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()

    with structlog.testing.capture_logs() as logs:
        sender.run(stop, interval=0.1)

    failures = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(failures) >= 2  # it went on looking
    assert {entry["event"] for entry in failures} == {"mail.database_error"}
    assert {entry["error"] for entry in failures} == {"OperationalError"}
    assert not any("exc_info" in entry for entry in failures)
    assert logs[-1]["event"] == "mail.sender_stopped"


def test_the_sender_backs_off_while_the_database_stays_down_and_logs_each_step(services):
    # As the search worker: a line a look five times a second while the database is down
    # would bury the log. The sender waits longer each time, up to 5 s, logs one line a
    # wait, and sends the mail that waited once the database answers.
    awaiting_verification(services)
    stop = CountedStop(waits=8)
    sender = OutboxSender.from_settings(
        services.settings,
        services.sessions,
        transport=MaildirTransport(services.settings.maildir_path),
    )
    sender.has_due = down_first(6, sender.has_due, "SELECT outbox …")
    with structlog.testing.capture_logs() as logs:
        sender.run(stop, interval=0.2)

    assert stop.waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 0.2, 0.2]
    errors = [entry for entry in logs if entry["event"] == "mail.database_error"]
    assert [(entry["failures"], entry["retry_in_seconds"]) for entry in errors] == list(
        zip(range(1, 7), stop.waits[:6], strict=True)
    )
    (back,) = [entry for entry in logs if entry["event"] == "mail.database_recovered"]
    assert back["failures"] == 6
    assert [mail.recipient for mail in maildir_messages(services.settings.maildir_path)] == [
        "anna@example.pl"
    ]
