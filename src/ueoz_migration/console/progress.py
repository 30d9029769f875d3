"""How the migration is going as a whole: figures for operators and auditors, from SQL.

Every figure is an aggregate the database computes (counts, percentiles), over a period of
whole days in UTC ending today; the transition log answers most of them through one index
(``ix_transition_log_progress``: event, outcome, time, attempt), which it reads alone, in one
pass grouped by event and day:

- migrations started and completed per day: ``start`` rows less ``skip`` rows (a login of
  someone already migrated starts an attempt that skips at once), and ``verify`` rows;
- the funnel: attempts that logged in (``start``, less ``skip``), whose e-PLOZ account was
  found (``account_found``), that gave an e-mail address (``submit``), that verified it
  (``verify``), each counted once however often it happened: the flow applies ``start``,
  ``skip``, ``account_found``, ``verify``, ``cancel`` and ``expire`` at most once in an
  attempt (each leaves its source state for good), so their rows are counted; ``submit``
  comes again after ``change_email``, so its attempts are counted apart;
- outcomes: event numbers minted per code (the rows that minted one carry its code, in an
  index of their own), and how many attempts ended cancelled, expired or verified;
- time from the e-mail to the verification: the used link's age when it was used
  (``verification_links``), median and 90th percentile by nearest rank;
- the queues now: the search and mail queues' depth and oldest age, as /metrics reads them
  (``metrics.QueueCollector.figures``, handed in as ``queues``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Date, Float, Integer, cast, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot
from ..db.models import TransitionLogEntry, VerificationLink
from ..domain.codes import EventCode

LOG = TransitionLogEntry
PERIODS = (7, 30, 90)  # days an operator may choose between
DEFAULT_PERIOD = 30
FUNNEL = ("start", "account_found", "submit", "verify")
ENDS = ("verify", "cancel", "expire")
#: The events the flow applies at most once in an attempt: their rows count attempts.
ONCE = ("start", "skip", "account_found", "verify", "cancel", "expire")
PERCENTILES = (50, 90)


@dataclass(frozen=True)
class Day:
    day: date
    started: int
    completed: int


@dataclass(frozen=True)
class Queue:
    name: str
    depth: int
    oldest_seconds: float | None


@dataclass(frozen=True)
class Progress:
    """The progress page's figures."""

    since: datetime
    until: datetime
    days: list[Day]
    funnel: dict[str, int]  # FUNNEL's events → attempts
    codes: dict[int, int]  # event code → event numbers minted
    ends: dict[str, int]  # ENDS' events → attempts
    verification_seconds: dict[int, float | None]  # percentile → seconds (None: no data)
    verified_links: int
    queues: list[Queue]


def measure(
    sessions: sessionmaker[Session],
    days: int,
    *,
    now: datetime,
    queues: Callable[[], dict[str, tuple[int, datetime | None]]],
) -> Progress:
    """Read every figure of the last ``days`` days (today's included) in one snapshot."""
    until = now
    since = datetime.combine(now.astimezone(UTC).date() - timedelta(days=days - 1), time(), UTC)
    with snapshot(sessions) as session:
        day = _day(session)
        per_day: dict[str, dict[date, int]] = {event: {} for event in ONCE}
        for event, on, count in session.execute(
            select(LOG.event, day, func.count())
            .where(LOG.event.in_(ONCE), LOG.outcome == "applied")
            .where(LOG.at >= since, LOG.at <= until)
            .group_by(LOG.event, day)
        ):
            per_day[event][_as_date(on)] = count
        attempts = {event: sum(per_day[event].values()) for event in ONCE}
        attempts["submit"] = (
            session.scalar(
                select(func.count(LOG.attempt_id.distinct())).where(
                    *_applied("submit", since, until)
                )
            )
            or 0
        )
        # Only a row that minted an event number has a code (ix_transition_log_codes).
        codes = {
            code: count
            for code, count in session.execute(
                select(LOG.event_code, func.count())
                .where(LOG.event_code.is_not(None), LOG.at >= since, LOG.at <= until)
                .group_by(LOG.event_code)
            )
        }
        percentiles, verified = _verification_seconds(session, since, until)
    figures = queues()
    all_days = [since.date() + timedelta(days=offset) for offset in range(days)]
    return Progress(
        since=since,
        until=until,
        days=[
            Day(
                each,
                per_day["start"].get(each, 0) - per_day["skip"].get(each, 0),
                per_day["verify"].get(each, 0),
            )
            for each in all_days
        ],
        funnel={
            "start": attempts["start"] - attempts["skip"],
            **{event: attempts[event] for event in FUNNEL[1:]},
        },
        codes={code.value: codes.get(code.value, 0) for code in EventCode},
        ends={event: attempts[event] for event in ENDS},
        verification_seconds=percentiles,
        verified_links=verified,
        queues=[
            Queue(name, depth, (now - oldest).total_seconds() if oldest else None)
            for name, (depth, oldest) in figures.items()
        ],
    )


def _applied(event: str, since: datetime, until: datetime) -> tuple[ColumnElement[bool], ...]:
    return (LOG.event == event, LOG.outcome == "applied", LOG.at >= since, LOG.at <= until)


def _day(session: Session) -> ColumnElement[Any]:
    """The UTC day of a log row's time, in the database's own terms."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", LOG.at), Date)
    # SQLite keeps the UTC time as text, YYYY-MM-DD HH:MM:SS.ffffff.
    return func.substr(LOG.at, 1, 10)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _seconds(session: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return cast((func.julianday(later) - func.julianday(earlier)) * 86400.0, Float)


def _verification_seconds(
    session: Session, since: datetime, until: datetime
) -> tuple[dict[int, float | None], int]:
    """The used links' ages at use, at :data:`PERCENTILES` (nearest rank), and how many.

    Read from ``ix_verification_links_used`` (used_at, created_at) alone. PostgreSQL has the
    percentile as an aggregate (``percentile_disc``: one sort for all of them); SQLite has
    none, and ranks the ages with a window function instead: the percentile p of n values is
    the value of rank ceil(n·p/100), in whole numbers.
    """
    link = VerificationLink
    age = _seconds(session, link.used_at, link.created_at)
    period = (link.used_at >= since, link.used_at <= until)
    if session.get_bind().dialect.name == "postgresql":
        fractions = postgresql.array([percentile / 100 for percentile in PERCENTILES])
        values, count = session.execute(
            select(func.percentile_disc(fractions).within_group(age), func.count()).where(*period)
        ).one()
        return dict(zip(PERCENTILES, values or [None] * len(PERCENTILES), strict=True)), count
    ranked = (
        select(
            age.label("age"),
            func.row_number().over(order_by=age).label("rank"),
            func.count().over().label("n"),
        )
        .where(*period)
        .subquery()
    )
    wanted = [
        cast((ranked.c.n * percentile + 99) / 100, Integer) == ranked.c.rank
        for percentile in PERCENTILES
    ]
    rows = session.execute(
        select(ranked.c.rank, ranked.c.age, ranked.c.n).where(or_(*wanted))
    ).all()
    count = rows[0].n if rows else 0
    by_rank = {row.rank: float(row.age) for row in rows}
    return {
        percentile: by_rank.get((count * percentile + 99) // 100) for percentile in PERCENTILES
    }, count
