"""The auditors' checks in the console: the command line's ``audit verify``, ``audit replay``
and ``audit export``, over the same code (``audit/``), for one attempt or the whole log.

An attempt is named by its id or its event number, as on the command line. The whole log is
verified in the web process itself (one process: a web worker does not fork helpers), which
on a long log takes a while; ``audit verify --all`` on a shell splits it over the CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.orm import Session, sessionmaker

from ..audit.export import export_lines
from ..audit.log import find_attempt, orphaned_attempt_id, read_log, story
from ..audit.replay import replay_log
from ..audit.report import AuditReport
from ..audit.verify import verify_chain
from ..db.engine import snapshot
from ..db.models import TransitionLogEntry
from ..domain.event_numbers import NotAnEventNumber, normalize_event_number


class NoSuchAttempt(LookupError):
    """No attempt, and no log rows, go by the id or event number given."""


@dataclass(frozen=True)
class Checked:
    """An audit's report, and for one attempt its path and log rows."""

    report: AuditReport
    attempt_id: str | None = None
    path: str | None = None
    rows: tuple[TransitionLogEntry, ...] = ()


def resolve(session: Session, reference: str) -> str:
    """The attempt id an auditor means by an id or an event number (any case, spaces).

    Log rows whose attempt row is gone name it all the same: the check then reports it.
    """
    try:
        named = normalize_event_number(reference)
    except NotAnEventNumber:
        named = reference.strip()
    attempt = find_attempt(session, named)
    attempt_id = attempt.id if attempt is not None else orphaned_attempt_id(session, named)
    if attempt_id is None:
        raise NoSuchAttempt(reference)
    return attempt_id


def verify(sessions: sessionmaker[Session], key: bytes, reference: str | None) -> Checked:
    """Verify the hash chain of one attempt (``reference``) or, given None, of every one."""
    with snapshot(sessions) as session:
        if reference is None:
            return Checked(verify_chain(session, key, None, processes=1))
        attempt_id = resolve(session, reference)
        return Checked(verify_chain(session, key, [attempt_id]), attempt_id)


def replay(sessions: sessionmaker[Session], reference: str) -> Checked:
    """Replay one attempt against its flow version; its path as ``audit replay`` prints it."""
    with snapshot(sessions) as session:
        attempt_id = resolve(session, reference)
        report = replay_log(session, [attempt_id])
        rows = read_log(session, attempt_id)
        session.expunge_all()
    return Checked(report, attempt_id, story(rows) if report.ok else None, tuple(rows))


def period(first: date, last: date) -> tuple[datetime, datetime]:
    """The attempts started from the first day to the last, both whole (UTC)."""
    return (
        datetime.combine(first, time(), UTC),
        datetime.combine(last + timedelta(days=1), time(), UTC),
    )


def export(sessions: sessionmaker[Session], started: tuple[datetime, datetime]) -> Iterator[str]:
    """The export of the attempts started in the period, line by line, as ``audit export``
    writes it: read in batches from one snapshot while the browser downloads it."""
    with snapshot(sessions) as session:
        yield from export_lines(session, started=started)
