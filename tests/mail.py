"""The mail tests' parts: a real SMTP server on loopback, a sender that talks to it, the outbox."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from aiosmtpd.controller import Controller
from sqlalchemy import select

from tests.clock import Clock
from tests.factories import submit
from tests.integration.test_journey import to_email_entry
from ueoz_migration.adapters.smtp import SmtpTransport
from ueoz_migration.bootstrap import Services
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
