"""The Maildir transport, the embedded default's mail, as the development mail page reads it."""

from __future__ import annotations

from tests.mail import (
    SUBJECT_PL,
    awaiting_verification,
)
from ueoz_migration.adapters.maildir import MaildirTransport, maildir_messages
from ueoz_migration.workers.outbox import OutboxSender


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
