"""How the migration is going as a whole: figures for operators and auditors, from SQL.

Every figure is an aggregate the database computes (counts, percentiles), over a period of
whole days in UTC ending today; the transition log answers most of them through one index
(``ix_transition_log_progress``: event, outcome, time, attempt), which it reads alone:

- migrations started and completed per day: ``start`` rows less ``skip`` rows (a login of
  someone already migrated starts an attempt that skips at once), and ``verify`` rows;
- the funnel: attempts that logged in (``start``, less ``skip``), whose e-PLOZ account was
  found (``account_found``), that gave an e-mail address (``submit``), that verified it
  (``verify``), each counted once however often it happened;
- outcomes: event numbers minted per code (``search_failed``'s rows carry the code), and
  how many attempts ended cancelled, expired or verified;
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

from sqlalchemy import ColumnElement, Date, Float, Integer, cast, func, select
from sqlalchemy.orm import Session, sessionmaker

from ..db.engine import snapshot
from ..db.models import TransitionLogEntry, VerificationLink
from ..domain.codes import EventCode

LOG = TransitionLogEntry
PERIODS = (7, 30, 90)  # days an operator may choose between
DEFAULT_PERIOD = 30
FUNNEL = ("start", "account_found", "submit", "verify")
ENDS = ("verify", "cancel", "expire")
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
        per_day = {
            event: dict(_per_day(session, event, day, since, until))
            for event in ("start", "skip", "verify")
        }
        attempts = {
            event: _attempts(session, event, since, until) for event in {*FUNNEL, *ENDS, "skip"}
        }
        codes = {
            code: count
            for code, count in session.execute(
                select(LOG.event_code, func.count())
                .where(*_applied("search_failed", since, until))
                .where(LOG.event_code.is_not(None))
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


def _attempts(session: Session, event: str, since: datetime, until: datetime) -> int:
    """How many attempts had ``event`` applied in the period (each counted once)."""
    counted = func.count(LOG.attempt_id.distinct())
    return session.scalar(select(counted).where(*_applied(event, since, until))) or 0


def _per_day(
    session: Session, event: str, day: ColumnElement[Any], since: datetime, until: datetime
) -> list[tuple[date, int]]:
    rows = session.execute(
        select(day, func.count()).where(*_applied(event, since, until)).group_by(day)
    )
    return [(_as_date(value), count) for value, count in rows]


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

    Ranked by a window function, which SQLite and PostgreSQL both have: the percentile p of
    n values is the value of rank ceil(n·p/100), computed in whole numbers.
    """
    link = VerificationLink
    ages = (
        select(
            _seconds(session, link.used_at, link.created_at).label("age"),
            func.row_number()
            .over(order_by=_seconds(session, link.used_at, link.created_at))
            .label("rank"),
            func.count().over().label("n"),
        )
        .where(link.used_at >= since)
        .where(link.used_at <= until)
        .subquery()
    )
    wanted = [
        cast((ages.c.n * percentile + 99) / 100, Integer) == ages.c.rank
        for percentile in PERCENTILES
    ]
    rows = session.execute(
        select(ages.c.rank, ages.c.age, ages.c.n).where(wanted[0] | wanted[1])
    ).all()
    count = rows[0].n if rows else 0
    by_rank = {row.rank: float(row.age) for row in rows}
    return {
        percentile: by_rank.get((count * percentile + 99) // 100) for percentile in PERCENTILES
    }, count
