"""Write e-mail into a Maildir folder and read it back: the embedded default's mail (/dev/mail)."""

from __future__ import annotations

import mailbox
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from .mail_transport import DeliveryError


class MaildirTransport:
    """Drop messages into a Maildir folder: the embedded default's mail, read on /dev/mail."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def deliver(self, message: EmailMessage) -> None:
        try:
            mailbox.Maildir(self.path, create=True).add(message)
        except OSError as error:
            raise DeliveryError(f"maildir not writable: {type(error).__name__}") from None


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
