"""The mail sender: retries while the link works, leases, two senders, the command and the loop."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from tests.clock import Clock
from tests.conftest import make_settings
from tests.factories import ANNA, CountedStop, down_first, user
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
from ueoz_migration.adapters.maildir import MaildirTransport, maildir_messages
from ueoz_migration.bootstrap import Services
from ueoz_migration.cli import main
from ueoz_migration.db.engine import make_engine, make_sessionmaker, transaction
from ueoz_migration.db.models import OutboxMessage
from ueoz_migration.workers.outbox import OutboxSender


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
