"""The search worker: look each ``searching`` attempt's person up in the e-PLOZ directory.

Claim an attempt under a lease, search outside any transaction, and fire the outcome through
the journey (docs/architecture.md, "Background work"); retries, code 207 and a hung e-PLOZ:
docs/operations.md, "Search worker and mail sender".
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.eploz import Directory, DirectoryUnavailable, TableDirectory
from ..config import Settings
from ..db.engine import snapshot, transaction
from ..db.models import Attempt
from ..domain.codes import EventCode
from ..domain.matching import MatchOutcome, match_account
from ..domain.privacy import mask_pesel
from ..journey import Actor, EventRefused, FlowNotRunnable, Journey, utcnow
from ..metrics import SEARCHES
from .loop import LoopEvents, run_passes

log = structlog.get_logger(__name__)

SEARCHING = "searching"
# Beyond the search's own timeout, the time a worker may need to record the outcome.
LEASE_MARGIN = timedelta(seconds=30)
# How often an idle worker looks for new attempts. The person watches the searching screen
# meanwhile, so it is short; a look is one read of ix_attempts_searching (see has_due).
POLL_INTERVAL = 0.2
EVENTS = LoopEvents(
    started="worker.started",
    stopped="worker.stopped",
    database_error="worker.database_error",
    database_recovered="worker.database_recovered",
    unexpected="worker.pass_failed",
)
# Look-ups of a hung e-PLOZ a worker leaves running (each a thread, and with the table
# directory a pooled connection: the pool holds 15, the worker's own work needs two).
MAX_HUNG_LOOKUPS = 4


# An attempt a worker may search at ``:now``: searching, due, and its lease free (none, or
# run out). :meth:`SearchWorker.has_due` and :meth:`SearchWorker.claim` both ask this.
DUE = and_(
    Attempt.state == SEARCHING,
    Attempt.search_due_at <= bindparam("now"),
    or_(Attempt.search_lease_until.is_(None), Attempt.search_lease_until <= bindparam("now")),
)


@dataclass(frozen=True)
class Claim:
    """An attempt a worker holds the lease of, with what the search needs to know."""

    attempt_id: str
    pesel: str
    pesel_hash: str
    given_names: str
    family_name: str
    tries: int  # this try included
    lease_until: datetime


@dataclass
class RunReport:
    """What one pass of the worker did."""

    found: int = 0
    failed: dict[int, int] = field(default_factory=dict)  # event code -> attempts
    retried: int = 0
    superseded: int = 0  # outcome not applied: the attempt moved on meanwhile
    broken: int = 0  # outcome not applied: recording it failed (logged as an error)

    @property
    def searched(self) -> int:
        return self.found + sum(self.failed.values()) + self.retried + self.superseded + self.broken

    def count(self) -> None:
        """Add this pass's outcomes to the process's ``ueoz_searches_total``."""
        for outcome, number in (
            ("found", self.found),
            ("failed", sum(self.failed.values())),
            ("retried", self.retried),
            ("superseded", self.superseded),
            ("broken", self.broken),
        ):
            if number:
                SEARCHES.labels(outcome).inc(number)


class SearchWorker:
    """Claims due searches and drives each attempt to ``found`` or ``error``.

    ``timeout``: how long one search may wait for e-PLOZ; ``retry_base``: the wait after the
    first failed try, doubled after each further one; ``max_tries``: tries before code 207.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        journey: Journey,
        directory: Directory | None = None,
        *,
        timeout: timedelta,
        retry_base: timedelta,
        max_tries: int,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.journey = journey
        self.directory = directory if directory is not None else TableDirectory(sessions)
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.clock = clock
        self.timeout = timeout
        self.retry_base = retry_base
        self.max_tries = max_tries
        self.lease = timeout + LEASE_MARGIN
        self.log = log.bind(worker=self.worker_id)
        # Look-ups still running after their search timed out: each holds a thread and, with
        # the table directory, a pooled database connection. While a hung e-PLOZ keeps them
        # all, a search fails at once (and is retried) instead of abandoning one more.
        self._lookups = threading.BoundedSemaphore(MAX_HUNG_LOOKUPS)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        sessions: sessionmaker[Session],
        journey: Journey,
        directory: Directory | None = None,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> SearchWorker:
        """Build the worker as ``SEARCH_TIMEOUT_SECONDS`` and the other settings say."""
        return cls(
            sessions,
            journey,
            directory,
            timeout=settings.search_timeout,
            retry_base=settings.search_retry_base,
            max_tries=settings.search_max_tries,
            worker_id=worker_id,
            clock=clock,
        )

    # -- one pass -------------------------------------------------------------------------

    def run_once(self, *, stop: threading.Event | None = None) -> RunReport:
        """Search every attempt that is due now, then return what happened."""
        report = RunReport()
        try:
            while stop is None or not stop.is_set():
                claim = self.claim()
                if claim is None:
                    break
                self.process(claim, report)
        finally:
            report.count()
        return report

    def has_due(self) -> bool:
        """Say whether a search is due now and free to take; a read, without any lock.

        :data:`DUE`, as :meth:`claim` asks it, read from a snapshot: an idle worker that
        looks five times a second never queues for SQLite's write lock (``claim``'s
        transaction takes it) nor locks a row on PostgreSQL. A true answer may be stale;
        the claim decides.
        """
        now = self.clock()
        with snapshot(self.sessions) as session:
            due = select(Attempt.id).where(DUE).limit(1)
            return session.execute(due, {"now": now}).first() is not None

    def claim(self) -> Claim | None:
        """Take the lease of one due attempt whose lease is free, or return None."""
        now = self.clock()
        with transaction(self.sessions) as session:
            attempt = session.scalars(
                select(Attempt)
                .where(DUE)
                .order_by(Attempt.search_due_at)
                .limit(1)
                .with_for_update(skip_locked=True),
                {"now": now},
            ).first()
            if attempt is None:
                return None
            attempt.search_lease_until = now + self.lease
            attempt.search_tries += 1
            return Claim(
                attempt_id=attempt.id,
                pesel=attempt.pesel,
                pesel_hash=attempt.pesel_hash,
                given_names=attempt.given_names,
                family_name=attempt.family_name,
                tries=attempt.search_tries,
                lease_until=attempt.search_lease_until,
            )

    def process(self, claim: Claim, report: RunReport) -> None:
        """Search for one claimed attempt and record the outcome.

        A failure that belongs to this attempt alone (a step that raises, a flow version
        nowhere to be found) is logged as an error and ends its turn, not the worker: the
        attempt keeps its lease until it runs out, and is then tried again like a search
        whose worker died, up to the limit of tries. A database error goes up to the loop,
        which waits and carries on.
        """
        try:
            self._process(claim, report)
        except SQLAlchemyError:
            raise
        except Exception as error:
            report.broken += 1
            # Only the class name: a message may quote the PESEL.
            self.log.error(
                "search.outcome_not_recorded",
                attempt=claim.attempt_id,
                error=type(error).__name__,
                tries=claim.tries,
                # Names only (versions, behaviours, events), never personal data.
                **({"reason": str(error)} if isinstance(error, FlowNotRunnable) else {}),
            )

    def _process(self, claim: Claim, report: RunReport) -> None:
        request_id = uuid.uuid4().hex
        logger = self.log.bind(
            attempt=claim.attempt_id, pesel=mask_pesel(claim.pesel), request_id=request_id
        )
        if claim.tries > self.max_tries:
            # Earlier tries never reported back (their worker died mid-search): an attempt
            # that keeps killing workers must not be searched for ever.
            logger.warning("search.tries_exhausted", tries=claim.tries)
            self._retry_or_give_up(claim, report, logger, request_id)
            return
        try:
            outcome = self._search(claim)
        except Exception as error:  # any failure of e-PLOZ is retried, whatever it is
            # Only the class name: a driver's message may quote the PESEL it was given.
            logger.warning("search.directory_failed", error=type(error).__name__, tries=claim.tries)
            self._retry_or_give_up(claim, report, logger, request_id)
            return
        actor = Actor("worker", request_id)
        try:
            if outcome.account is not None:
                account_id = outcome.account.id  # type: ignore[attr-defined]
                self.journey.fire(
                    claim.attempt_id, "account_found", actor=actor, eploz_account_id=account_id
                )
                report.found += 1
                logger.info("search.found", eploz_account=account_id, tries=claim.tries)
            else:
                assert outcome.code is not None
                self._fail(claim, outcome.code, actor)
                report.failed[int(outcome.code)] = report.failed.get(int(outcome.code), 0) + 1
                logger.info("search.failed", event_code=int(outcome.code), tries=claim.tries)
        except EventRefused as refused:
            # The person cancelled, or the attempt expired, while e-PLOZ was being asked.
            report.superseded += 1
            logger.info("search.superseded", state=refused.attempt.state)

    def _search(self, claim: Claim) -> MatchOutcome:
        """Ask the directory, within the search timeout, and match what it returns."""

        def look_up() -> MatchOutcome:
            candidates = self.directory.accounts_by_pesel(claim.pesel)
            elsewhere = len(candidates) == 1 and self.directory.is_migrated_elsewhere(
                candidates[0].id, claim.pesel_hash
            )
            return match_account(
                candidates, claim.given_names, claim.family_name, migrated_elsewhere=elsewhere
            )

        # A daemon thread of its own, so that a hung directory costs this worker the timeout
        # and not the rest of its queue, nor its shutdown; it is abandoned, never joined. At
        # most MAX_HUNG_LOOKUPS are ever abandoned at once (self._lookups).
        answer: queue.Queue[tuple[MatchOutcome | None, BaseException | None]] = queue.Queue(1)
        if not self._lookups.acquire(blocking=False):
            raise DirectoryUnavailable(
                f"{MAX_HUNG_LOOKUPS} earlier searches are still waiting for e-PLOZ"
            )

        def run() -> None:
            try:
                outcome: tuple[MatchOutcome | None, BaseException | None] = (look_up(), None)
            except BaseException as error:  # handed over to the worker's thread
                outcome = (None, error)
            # Free before answering: the worker's next search may start the moment it has
            # the answer, and must find this look-up's place free.
            self._lookups.release()
            answer.put(outcome)

        try:
            threading.Thread(target=run, name="eploz-search", daemon=True).start()
        except RuntimeError:  # "can't start new thread": the look-up never ran
            self._lookups.release()
            raise
        try:
            outcome, error = answer.get(timeout=self.timeout.total_seconds())
        except queue.Empty:
            raise TimeoutError(f"e-PLOZ did not answer within {self.timeout}") from None
        if error is not None:
            raise error
        assert outcome is not None
        return outcome

    def _fail(self, claim: Claim, code: EventCode, actor: Actor) -> None:
        self.journey.fire(claim.attempt_id, "search_failed", actor=actor, code=int(code))

    def _retry_or_give_up(
        self, claim: Claim, report: RunReport, logger: structlog.BoundLogger, request_id: str
    ) -> None:
        if claim.tries >= self.max_tries:
            try:
                self._fail(claim, EventCode.DIRECTORY_UNAVAILABLE, Actor("worker", request_id))
            except EventRefused as refused:
                report.superseded += 1
                logger.info("search.superseded", state=refused.attempt.state)
                return
            code = int(EventCode.DIRECTORY_UNAVAILABLE)
            report.failed[code] = report.failed.get(code, 0) + 1
            logger.warning("search.gave_up", event_code=code, tries=claim.tries)
            return
        delay = self.retry_base * (2 ** (claim.tries - 1))
        now = self.clock()
        with transaction(self.sessions) as session:
            attempt = session.get(Attempt, claim.attempt_id, with_for_update=True)
            # Only while our lease still stands: otherwise another worker owns the attempt.
            if (
                attempt is None
                or attempt.state != SEARCHING
                or attempt.search_lease_until != claim.lease_until
            ):
                report.superseded += 1
                return
            attempt.search_due_at = now + delay
            attempt.search_lease_until = None
        report.retried += 1
        logger.info(
            "search.retry_scheduled", tries=claim.tries, delay_seconds=delay.total_seconds()
        )

    # -- the loop -------------------------------------------------------------------------

    def run_forever(
        self,
        stop: threading.Event,
        *,
        poll_interval: float = POLL_INTERVAL,
        expire_interval: float = 60.0,
        backoff_cap: float = 5.0,
    ) -> None:
        """Search until ``stop`` is set, looking every ``poll_interval`` seconds when idle;
        sweep expired attempts every ``expire_interval`` seconds."""
        next_sweep = 0.0

        def one_pass() -> None:
            nonlocal next_sweep
            monotonic = time.monotonic()
            if monotonic >= next_sweep:
                sweep = self.journey.expire_stale()
                if sweep.expired or sweep.failed:
                    self.log.info(
                        "worker.expired_attempts", count=sweep.expired, failed=sweep.failed
                    )
                next_sweep = monotonic + expire_interval
            report = self.run_once(stop=stop) if self.has_due() else RunReport()
            if report.searched:
                self.log.info(
                    "worker.pass",
                    found=report.found,
                    failed=report.failed,
                    retried=report.retried,
                    superseded=report.superseded,
                    broken=report.broken,
                )

        run_passes(
            stop,
            one_pass,
            worker="search",
            log=self.log,
            events=EVENTS,
            interval=poll_interval,
            backoff_cap=backoff_cap,
        )
