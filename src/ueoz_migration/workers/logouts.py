"""The logout sender: deliver the back-channel logouts ending a UEOZ session wrote.

As the mail sender delivers the outbox: claimed under a lease, retried with backoff while
the domain system is away, given up after :data:`GIVE_UP_AFTER`; docs/operations.md, "The
sign-in provider", says how to run it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..backoff import jittered
from ..db.engine import snapshot, transaction
from ..db.models import BackchannelLogout
from ..oidc.clients import ClientRegistry
from ..oidc.keys import SigningKeys
from ..oidc.logout import logout_token
from .loop import LoopEvents, run_passes

log = structlog.get_logger(__name__)

#: After this, a domain system that still did not take the logout is no longer tried: its
#: own session has long ended, or it is gone.
GIVE_UP_AFTER = timedelta(hours=1)
MAX_BACKOFF = timedelta(minutes=5)
CLAIM_BATCH = 20
POLL_INTERVAL = 0.5
DATABASE_BACKOFF_CAP = 5.0
EVENTS = LoopEvents(
    started="oidc.logout_sender_started",
    stopped="oidc.logout_sender_stopped",
    database_error="oidc.logout_sender_database_error",
    database_recovered="oidc.logout_sender_database_recovered",
    unexpected="oidc.logout_sender_pass_failed",
)

# A row a sender may take at ``:now``: not delivered, not given up, due, nobody's lease.
DUE = and_(
    BackchannelLogout.sent_at.is_(None),
    BackchannelLogout.failed_at.is_(None),
    BackchannelLogout.due_at <= bindparam("now"),
    or_(
        BackchannelLogout.lease_until.is_(None),
        BackchannelLogout.lease_until <= bindparam("now"),
    ),
)
ANY_DUE = select(BackchannelLogout.id).where(DUE).limit(1)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SendReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0


class LogoutSender:
    """Claims due logout rows, posts their tokens, and records the outcome."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        keys: SigningKeys,
        registry: ClientRegistry,
        issuer: str,
        timeout: float,
        http: httpx.Client | None = None,
        retry_base: timedelta = timedelta(seconds=5),
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.keys = keys
        self.registry = registry
        self.issuer = issuer
        self.http = http or httpx.Client(timeout=timeout, follow_redirects=False)
        # Longer than one delivery can take, with room to record it.
        self.lease = timedelta(seconds=2 * timeout + 30)
        self.retry_base = retry_base
        self.clock = clock
        self.rng = rng or random.Random()  # jitter, not a secret

    def send_due(self, stop: threading.Event | None = None) -> SendReport:
        """Deliver every logout due now, batch by batch."""
        report = SendReport()
        while not (stop is not None and stop.is_set()):
            claimed = self.claim()
            if not claimed:
                break
            for row in claimed:
                outcome = self.deliver(row)
                setattr(report, outcome, getattr(report, outcome) + 1)
        return report

    def has_due(self) -> bool:
        with snapshot(self.sessions) as session:
            return session.execute(ANY_DUE, {"now": self.clock()}).first() is not None

    def claim(self) -> list[BackchannelLogout]:
        """Take a lease on up to one batch of due rows nobody holds; commit at once."""
        now = self.clock()
        with transaction(self.sessions) as session:
            rows = session.scalars(
                select(BackchannelLogout)
                .where(DUE)
                .order_by(BackchannelLogout.due_at, BackchannelLogout.id)
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True),
                {"now": now},
            ).all()
            for row in rows:
                row.lease_until = now + self.lease
            return list(rows)

    def deliver(self, row: BackchannelLogout) -> str:
        """Post one logout token; ``sent``, ``retried`` or ``failed``."""
        now = self.clock()
        client = self.registry.get(row.client_id)
        if client is None or not client.backchannel_logout_uri:
            return self._record(row, "failed", "the domain system no longer takes logouts")
        token = logout_token(self.keys, issuer=self.issuer, row=row, now=now)
        try:
            answer = self.http.post(
                client.backchannel_logout_uri,
                data={"logout_token": token},
                headers={"Cache-Control": "no-store"},
            )
        except httpx.HTTPError as error:
            return self._retry_or_fail(row, f"{type(error).__name__}")
        if answer.is_success:
            return self._record(row, "sent", "")
        if 400 <= answer.status_code < 500 and answer.status_code not in (408, 429):
            # Back-Channel Logout 2.8: the domain system found the token wrong; sending the
            # same again will not change its mind.
            return self._record(row, "failed", f"refused: HTTP {answer.status_code}")
        return self._retry_or_fail(row, f"HTTP {answer.status_code}")

    def _retry_or_fail(self, row: BackchannelLogout, reason: str) -> str:
        if self.clock() >= row.created_at + GIVE_UP_AFTER:
            return self._record(row, "failed", f"gave up after {row.tries + 1} tries: {reason}")
        return self._record(row, "retried", reason)

    def _record(self, row: BackchannelLogout, outcome: str, reason: str) -> str:
        now = self.clock()
        tries = row.tries + 1
        values: dict[str, object] = {"tries": tries, "lease_until": None, "last_error": reason}
        if outcome == "sent":
            values["sent_at"] = now
        elif outcome == "failed":
            values["failed_at"] = now
        else:
            values["due_at"] = now + self.backoff(tries)
        with transaction(self.sessions) as session:
            session.execute(
                update(BackchannelLogout)
                .where(BackchannelLogout.id == row.id)
                .where(BackchannelLogout.lease_until == row.lease_until)  # still ours
                .values(**values)
            )
        fields = {"logout_id": row.id, "client": row.client_id, "tries": tries}
        if outcome == "sent":
            log.info("oidc.backchannel_logout_sent", **fields)
        elif outcome == "failed":
            log.error("oidc.backchannel_logout_failed", error=reason, **fields)
        else:
            log.warning("oidc.backchannel_logout_retry", error=reason, **fields)
        return outcome

    def backoff(self, tries: int) -> timedelta:
        """The wait before the next try of a logout that failed ``tries`` times."""
        return jittered(self.retry_base, tries, MAX_BACKOFF, self.rng)

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float = POLL_INTERVAL,
        backoff_cap: float = DATABASE_BACKOFF_CAP,
    ) -> None:
        """Deliver due logouts until ``stop`` is set, looking every ``interval`` seconds."""

        def one_pass() -> None:
            if self.has_due():
                self.send_due(stop)

        run_passes(
            stop,
            one_pass,
            worker="logout",
            log=log,
            events=EVENTS,
            interval=interval,
            backoff_cap=backoff_cap,
        )
