"""What a mail transport promises the mail sender: hand the message over, or say why not."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol


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
