"""A clock the tests move by hand, so that backoff, leases and expiry need no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Now, until moved; give it where the code takes ``clock=`` (or ``journey.clock = …``).

    ``tick``: how far it moves by itself after each reading, so that things taken in a burst
    (anchors, say) each get a time of their own.
    """

    def __init__(self, *, tick: timedelta = timedelta(0)) -> None:
        self.now = datetime.now(UTC)
        self.tick = tick

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.tick
        return now

    def advance(self, delta: timedelta = timedelta(0), /, **parts: float) -> None:
        """Move on by ``delta``, or by ``timedelta(**parts)`` (``advance(hours=1)``)."""
        self.now += delta + timedelta(**parts)
