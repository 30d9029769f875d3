"""Verification e-mails withdrawn from the outbox when their link is retired before they go.

The SMTP server is down while the person acts (a new address, a newer link, the attempt
ends): when it comes back, only the e-mail that still makes sense arrives. What the person
sees is the real SMTP server's inbox; what the operator sees, the outbox rows and the
`mail-sender --once` command.
"""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy

import pytest
import structlog
from click.testing import CliRunner

from tests.clock import Clock
from tests.factories import HERMEGILDA, link_token, submit, user
from tests.mail import (
    Inbox,
    awaiting_verification,
    outbox,
    smtp_environ,
    smtp_sender,
    smtp_server,
)
from tests.ports import free_port
from ueoz_migration.adapters.mail_transport import DeliveryError
from ueoz_migration.bootstrap import Services
from ueoz_migration.cli import main
from ueoz_migration.journey import Actor


def link_in(raw: bytes) -> str:
    """The verification link's token in a delivered message, as the person would click it."""
    body = message_from_bytes(raw, policy=policy.default).get_content()
    return next(word for word in body.split() if "/weryfikacja/" in word).rsplit("/", 1)[1]


def while_the_server_is_down(services: Services, clock: Clock) -> None:
    """One sender pass against a port nobody listens on: the outbox's mail waits for later."""
    assert smtp_sender(services, free_port(), clock).send_due().retried >= 1


def test_a_corrected_address_gets_the_one_email_and_the_mistyped_one_none(services):
    attempt_id = awaiting_verification(services, email="anna@exampel.pl")  # a typo
    clock = Clock()
    while_the_server_is_down(services, clock)

    services.journey.fire(attempt_id, "change_email", actor=user())
    submit(services, attempt_id, email="anna@example.pl")
    clock.advance(timedelta(hours=1))
    port = free_port()
    with smtp_server(port, Inbox()) as inbox:
        report = smtp_sender(services, port, clock).send_due()

    # The person: one e-mail, at the address they corrected it to, whose link works.
    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    ((recipients, raw),) = inbox.received
    assert recipients == ["anna@example.pl"]
    attempt = services.journey.fire(attempt_id, "verify", actor=user(), token=link_in(raw))
    assert attempt.state == "done"
    # The operator: the mistyped address's message withdrawn, not failed, and why.
    mistyped, corrected = outbox(services)
    assert mistyped.recipient == "anna@exampel.pl"
    assert (mistyped.sent_at, mistyped.failed_at) == (None, None)
    assert mistyped.withdrawn_at is not None
    assert mistyped.last_error == "withdrawn: the address was changed"
    assert mistyped.body == ""  # its dead link and the person's name are not kept
    assert corrected.sent_at is not None and corrected.withdrawn_at is None


def test_after_a_resend_only_the_newest_link_arrives(services):
    attempt_id = awaiting_verification(services)
    clock = Clock()
    while_the_server_is_down(services, clock)

    services.journey.fire(attempt_id, "resend", actor=user())
    clock.advance(timedelta(hours=1))
    port = free_port()
    with smtp_server(port, Inbox()) as inbox:
        report = smtp_sender(services, port, clock).send_due()

    assert (report.sent, report.failed) == (1, 0)
    ((_recipients, raw),) = inbox.received
    older, newer = outbox(services)
    assert message_from_bytes(raw, policy=policy.default)["Message-ID"].startswith(
        f"<outbox-{newer.id}."
    )
    assert older.withdrawn_at is not None and older.sent_at is None
    assert older.last_error == "withdrawn: a newer link was sent"
    assert (newer.withdrawn_at, newer.last_error) == (None, "")
    attempt = services.journey.fire(attempt_id, "verify", actor=user(), token=link_in(raw))
    assert attempt.state == "done"


def test_an_expired_attempt_sends_nothing_and_the_sender_reports_no_failure(services, settings):
    attempt_id = awaiting_verification(services)
    while_the_server_is_down(services, Clock())

    services.journey.fire(attempt_id, "expire", actor=Actor.system())
    port = free_port()
    with smtp_server(port, Inbox()) as inbox:
        result = CliRunner().invoke(
            main, ["mail-sender", "--once"], env=smtp_environ(settings, port)
        )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "sent 0, to retry 0, failed 0"
    assert inbox.received == []
    (row,) = outbox(services)
    assert (row.sent_at, row.failed_at) == (None, None) and row.withdrawn_at is not None
    assert row.last_error == "withdrawn: the attempt expired"


def test_a_verified_address_gets_no_second_copy_of_its_email(services):
    # The sender handed the message over, then died before it recorded so: the person
    # verified with that e-mail's link; the copy the next sender would send is withdrawn.
    attempt_id = awaiting_verification(services)
    port, clock = free_port(), Clock()
    with smtp_server(port, Inbox()) as inbox:
        dying = smtp_sender(services, port, clock)
        (message,) = dying.claim()
        assert dying.hold(message)
        dying.transport.deliver(dying.compose(message))  # … and the process is killed

        ((_recipients, raw),) = inbox.received
        services.journey.fire(attempt_id, "verify", actor=user(), token=link_in(raw))
        clock.advance(timedelta(hours=1))  # the dead sender's lease has run out
        report = smtp_sender(services, port, clock).send_due()

    assert report.claimed == 0
    assert len(inbox.received) == 1
    (row,) = outbox(services)
    assert row.withdrawn_at is not None and row.failed_at is None
    assert row.last_error == "withdrawn: the address was verified"


def hermegilda_awaiting_verification(services: Services) -> str:
    """Hermegilda, with no e-PLOZ account, at `awaiting_verification` (one e-mail queued)."""
    journey = services.journey
    attempt = journey.start(HERMEGILDA, actor=user())
    journey.fire(attempt.id, "search_failed", actor=Actor("worker", "w"), code=208)
    journey.fire(attempt.id, "continue_new", actor=user())
    submit(services, attempt.id, email="hermegilda@example.pl")
    return attempt.id


def test_a_message_withdrawn_after_its_batch_was_claimed_is_not_sent(services):
    awaiting_verification(services)  # Anna's e-mail, first in the batch
    hermegilda = hermegilda_awaiting_verification(services)
    port, clock = free_port(), Clock()

    class Server:
        """The real server, and Hermegilda correcting her address while Anna's mail goes."""

        def __init__(self, transport) -> None:
            self.transport = transport

        def deliver(self, message):
            services.journey.fire(hermegilda, "change_email", actor=user())
            self.transport.deliver(message)

    with smtp_server(port, Inbox()) as inbox:
        sender = smtp_sender(services, port, clock)
        sender.transport = Server(sender.transport)
        with structlog.testing.capture_logs() as logs:
            report = sender.send_due()

    assert (report.sent, report.retried, report.failed) == (1, 0, 0)
    assert [recipients for recipients, _raw in inbox.received] == [["anna@example.pl"]]
    anna, hermegildas = outbox(services)
    assert anna.sent_at is not None
    assert hermegildas.sent_at is None and hermegildas.withdrawn_at is not None
    assert [entry["outbox_id"] for entry in logs if entry["event"] == "mail.withdrawn"] == [
        hermegildas.id
    ]


@pytest.mark.parametrize("server_takes_it", [True, False], ids=["delivered", "server-down"])
def test_a_message_withdrawn_while_it_is_being_sent(services, server_takes_it):
    # Once a sender hands the message to the server, it cannot be called back: the row then
    # says both that it went and that it had been withdrawn. If the server did not take it,
    # it is not tried again, and it is no failure.
    attempt_id = awaiting_verification(services)
    clock, delivered = Clock(), []

    class Server:
        def deliver(self, message):
            services.journey.fire(attempt_id, "change_email", actor=user())
            if not server_takes_it:
                raise DeliveryError("server unreachable: ConnectionRefusedError")
            delivered.append(message["To"])

    sender = smtp_sender(services, free_port(), clock)
    sender.transport = Server()
    report = sender.send_due()

    (row,) = outbox(services)
    assert row.withdrawn_at is not None and row.failed_at is None
    assert row.last_error == "withdrawn: the address was changed"
    if server_takes_it:
        assert (report.sent, report.retried, report.failed) == (1, 0, 0)
        assert delivered == ["anna@example.pl"] and row.sent_at is not None
    else:
        assert (report.sent, report.retried, report.failed) == (0, 0, 0)
        assert row.sent_at is None
        clock.advance(timedelta(hours=2))
        assert sender.send_due().claimed == 0


def test_a_resend_withdraws_the_older_email_but_never_its_own(services):
    # Within one transition the old links are retired, and the old e-mail withdrawn, before
    # the new e-mail is written.
    attempt_id = awaiting_verification(services)

    services.journey.fire(attempt_id, "resend", actor=user())
    services.journey.fire(attempt_id, "resend", actor=user())

    rows = outbox(services)
    assert [row.withdrawn_at is not None for row in rows] == [True, True, False]
    live = link_token(services, attempt_id)  # the newest e-mail, while it waits to go
    port = free_port()
    with smtp_server(port, Inbox()) as inbox:
        assert smtp_sender(services, port, Clock()).send_due().sent == 1
    ((_recipients, raw),) = inbox.received
    assert link_in(raw) == live


def test_a_withdrawn_message_is_due_for_no_sender(services):
    attempt_id = awaiting_verification(services)
    services.journey.fire(attempt_id, "expire", actor=Actor.system())
    sender = smtp_sender(services, free_port(), Clock())

    assert sender.has_due() is False  # an idle sender's look
    assert sender.claim() == []
    (row,) = outbox(services)
    assert row.lease_until is None  # not even leased


def test_a_message_that_failed_for_good_keeps_its_reason_when_the_address_changes(services):
    # The mailbox does not exist: the operator must still read that on the row, not
    # "withdrawn", after the person corrects the address and gets the second e-mail.
    attempt_id = awaiting_verification(services, email="anna@exampel.pl")
    port, clock = free_port(), Clock()
    with smtp_server(port, Inbox("550 5.1.1 <anna@exampel.pl>: no such user")):
        assert smtp_sender(services, port, clock).send_due().failed == 1

    services.journey.fire(attempt_id, "change_email", actor=user())
    submit(services, attempt_id, email="anna@example.pl")
    clock.advance(timedelta(minutes=5))
    with smtp_server(port, Inbox()) as inbox:
        assert smtp_sender(services, port, clock).send_due().sent == 1

    failed, corrected = outbox(services)
    assert failed.failed_at is not None and failed.withdrawn_at is None
    assert failed.last_error == "recipient refused: 550 5.1.1"
    assert corrected.sent_at is not None
    assert [recipients for recipients, _raw in inbox.received] == [["anna@example.pl"]]
