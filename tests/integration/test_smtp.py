"""The SMTP transport against a real server on loopback: what each answer does to the message.

Dead, slow and refusing servers, logins, sender addresses, STARTTLS and addresses beyond ASCII.
The outbox row and the server's inbox show the outcome, as an operator and the person see it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import structlog
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.clock import Clock
from tests.conftest import make_settings
from tests.mail import (
    SUBJECT_PL,
    Inbox,
    awaiting_verification,
    outbox,
    smtp_environ,
    smtp_sender,
    smtp_server,
)
from tests.ports import free_port
from ueoz_migration.bootstrap import Services
from ueoz_migration.cli import main
from ueoz_migration.workers.outbox import OutboxSender


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
