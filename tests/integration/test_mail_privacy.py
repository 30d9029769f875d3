"""What the outbox and the mail sender's logs keep of a person: no more than an operator needs.

A real SMTP server (aiosmtpd on loopback) answers the way real servers do, quoting the person
in forms no masking catches: only the local part of the address with the mailbox owner's full
name, the address URL-encoded, an address with an apostrophe. The operator sees the outbox
row, the log lines and the `mail-sender --once` output; none of them holds the server's words.
Once a message is sent, or failed for good, the outbox no longer holds its body: the
verification link in it is a bearer secret, and the body names the person.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import select, update

from tests.clock import Clock
from tests.factories import link_token
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
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import OutboxMessage

NAME = "Anna Maria Mickiewicz-Sokołowska"  # as the verification e-mail greets her


class RefusingData(Inbox):
    """A server that takes the recipient, then refuses the message with a set reply."""

    def __init__(self, data_reply: str) -> None:
        super().__init__()
        self.data_reply = data_reply

    async def handle_DATA(self, server, session, envelope):
        return self.data_reply


def stored_row(services: Services) -> str:
    """Every column of the one outbox row, as text: all that the database keeps of it."""
    with services.sessions() as session:
        row = session.execute(select(OutboxMessage.__table__)).one()
    return " ".join(str(value) for value in row)


# (the address the person gave, the server's reply to RCPT, what the operator sees, the
# outcome, and the pieces of the person that reply carries)
REPLIES = {
    "local-part-and-full-name": (
        "anna@example.pl",
        "550 5.1.1 <anna>... User unknown (Anna Mickiewicz-Sokolowska)",
        "recipient refused: 550 5.1.1",
        "mail.failed",
        ["anna", "Mickiewicz", "Sokolowska"],
    ),
    "url-encoded-address": (
        "anna@example.pl",
        "452 4.2.2 <anna%40example.pl>: mailbox full",
        "recipient refused: 452 4.2.2",
        "mail.retry",
        ["anna", "%40"],
    ),
    "apostrophe-in-address": (
        "o'brien@example.pl",
        "550 5.1.1 <o'brien@example.pl>: no such user",
        "recipient refused: 550 5.1.1",
        "mail.failed",
        ["o'b", "brien"],
    ),
    "no-enhanced-status-code": (
        "anna@example.pl",
        "550 Requested action not taken: mailbox anna unavailable",
        "recipient refused: 550",
        "mail.failed",
        ["anna", "unavailable"],
    ),
}


@pytest.mark.parametrize(
    ("email", "reply", "operator_sees", "event", "personal"), REPLIES.values(), ids=REPLIES
)
def test_a_refused_recipient_is_told_by_its_codes_alone(
    services, email, reply, operator_sees, event, personal
):
    awaiting_verification(services, email=email)
    port, clock = free_port(), Clock()

    with smtp_server(port, Inbox(reply)) as inbox, structlog.testing.capture_logs() as logs:
        smtp_sender(services, port, clock).send_due()

    assert inbox.received == []
    (row,) = outbox(services)
    assert row.last_error == operator_sees
    (line,) = [entry for entry in logs if entry["event"] == event]
    assert line["error"] == operator_sees
    assert line["to"] == f"{email[0]}***@example.pl"
    for piece in personal:
        assert piece not in row.last_error
        assert piece not in repr(logs)


def test_a_refused_message_is_told_by_its_codes_alone(services):
    awaiting_verification(services)
    port = free_port()
    reply = "554 5.7.1 Message from Anna Mickiewicz-Sokolowska <anna> rejected as spam"

    with smtp_server(port, RefusingData(reply)), structlog.testing.capture_logs() as logs:
        report = smtp_sender(services, port, Clock()).send_due()

    assert report.failed == 1
    (row,) = outbox(services)
    assert row.failed_at is not None
    assert row.last_error == "message refused: 554 5.7.1"
    (failed,) = [entry for entry in logs if entry["event"] == "mail.failed"]
    assert failed["error"] == "message refused: 554 5.7.1"
    assert "Mickiewicz" not in repr(logs) and "<anna>" not in repr(logs)


def test_the_operators_command_output_holds_no_word_of_the_servers_reply(services, settings):
    # The whole logging pipeline, as an operator reads it: the masking every line passes
    # through knows addresses, not a local part alone or a name.
    awaiting_verification(services)
    port = free_port()
    reply = "550 5.1.1 <anna>... User unknown (Anna Mickiewicz-Sokolowska)"

    with smtp_server(port, Inbox(reply)):
        result = CliRunner().invoke(
            main, ["mail-sender", "--once"], env=smtp_environ(settings, port)
        )

    assert result.exit_code == 1
    (failed,) = [line for line in result.output.splitlines() if "error=" in line]
    assert "error='recipient refused: 550 5.1.1'" in failed
    assert "to=a***@example.pl" in failed
    for piece in ("anna", "Mickiewicz", "Sokolowska", "User unknown"):
        assert piece not in result.output
    assert result.output.splitlines()[-2:] == [
        "sent 0, to retry 0, failed 1",
        "Error: 1 message(s) failed for good; see the log (mail.failed)",
    ]


def test_a_delivered_message_leaves_its_link_and_the_persons_name_with_the_person(services):
    awaiting_verification(services)
    port, clock = free_port(), Clock()
    sender = smtp_sender(services, port, clock)

    # Waiting for a server that says "later", the body is kept for the next try…
    with smtp_server(port, Inbox("452 4.2.2 mailbox full")):
        assert sender.send_due().retried == 1
    (waiting,) = outbox(services)
    assert "/weryfikacja/" in waiting.body and NAME in waiting.body

    clock.advance(timedelta(hours=1))
    with smtp_server(port, Inbox()) as inbox:
        assert sender.send_due().sent == 1

    # …and once delivered, the person has the link and the outbox keeps no copy of it.
    ((_recipients, raw),) = inbox.received
    delivered = message_from_bytes(raw, policy=policy.default).get_content()
    token = delivered.split("/weryfikacja/", 1)[1].split()[0]
    assert NAME in delivered
    (row,) = outbox(services)
    assert row.sent_at is not None and (row.subject, row.body) == (SUBJECT_PL, "")
    stored = stored_row(services)
    assert token not in stored and "Mickiewicz" not in stored


def test_a_message_refused_for_good_keeps_neither_its_link_nor_the_name(services):
    attempt_id = awaiting_verification(services)
    token = link_token(services, attempt_id)  # read before the sender ran, as it waited
    port = free_port()

    with smtp_server(port, Inbox("550 5.1.1 <anna>... User unknown")):
        assert smtp_sender(services, port, Clock()).send_due().failed == 1

    (row,) = outbox(services)
    assert row.failed_at is not None and (row.subject, row.body) == (SUBJECT_PL, "")
    stored = stored_row(services)
    assert token not in stored and "Mickiewicz" not in stored


def test_a_message_whose_link_expired_unsent_keeps_neither_its_link_nor_the_name(services):
    attempt_id = awaiting_verification(services)
    token = link_token(services, attempt_id)
    clock = Clock()
    clock.advance(services.settings.verification_link_ttl)

    assert smtp_sender(services, free_port(), clock).send_due().failed == 1

    (row,) = outbox(services)
    assert row.last_error == "not delivered while its link worked (24 h)"
    assert (row.tries, row.body) == (0, "")
    assert token not in stored_row(services)


def test_a_failed_message_made_due_again_by_hand_sends_no_empty_email(services):
    # The operator clears failed_at (the old way to send a failed message again): its body
    # is gone, so nothing goes out, and the row says why.
    awaiting_verification(services)
    port = free_port()
    with smtp_server(port, Inbox("550 5.1.1 no such user")):
        assert smtp_sender(services, port, Clock()).send_due().failed == 1
    with transaction(services.sessions) as session:
        session.execute(update(OutboxMessage).values(failed_at=None, due_at=datetime.now(UTC)))

    with smtp_server(port, Inbox()) as inbox:
        report = smtp_sender(services, port, Clock()).send_due()

    assert (report.sent, report.failed) == (0, 1)
    assert inbox.received == []
    (row,) = outbox(services)
    assert row.failed_at is not None and row.tries == 1
    assert row.last_error == (
        "nothing to send: its body was emptied when it was sent or failed for good; "
        "last error: recipient refused: 550 5.1.1"
    )
