"""Read the transition log: find an attempt by its id or event number, stream its rows."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, String, literal_column, select
from sqlalchemy.orm import Session

from ..db.models import Attempt, TransitionLogEntry
from ..domain.event_numbers import is_event_number

# Rows travel from the database in batches of this many; enough to keep the round trips
# negligible, small enough that memory stays flat on a log of any length.
BATCH = 5000

LOG = TransitionLogEntry.__table__


# ``at`` as the text the chain hashed (``datetime.isoformat`` of the UTC time), formatted by
# the database itself: parsing 100,000 timestamps into datetimes only to format them again
# would cost an audit more than hashing them. SQLite keeps the UTC time as
# ``YYYY-MM-DD HH:MM:SS.ffffff``; PostgreSQL formats its timestamptz in UTC.
_ISO_AT = {
    "sqlite": "replace(transition_log.at, ' ', 'T') || '+00:00'",
    "postgresql": """to_char(transition_log.at AT TIME ZONE 'UTC', """
    """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')""",
}


def iso_at(session: Session) -> ColumnElement[str] | None:
    """Return a column with each row's ``at`` in ISO form, or None when the database lacks one."""
    expression = _ISO_AT.get(session.get_bind().dialect.name)
    return literal_column(expression, String).label("at") if expression else None


def log_columns(*names: str | ColumnElement[Any]) -> list[ColumnElement[Any]]:
    return [LOG.c[name] if isinstance(name, str) else name for name in names]


def find_attempt(session: Session, reference: str) -> Attempt | None:
    """Return the attempt an auditor names by its id or by its event number ``MIGRATION_…``."""
    reference = reference.strip()
    if is_event_number(reference):
        attempt = session.scalars(
            select(Attempt).where(Attempt.event_number == reference)
        ).one_or_none()
        if attempt is not None:
            return attempt
        # A number minted earlier in the same attempt stays in its log even if a later one
        # replaced it on the attempt.
        attempt_id = session.scalars(
            select(TransitionLogEntry.attempt_id).where(
                TransitionLogEntry.event_number == reference
            )
        ).first()
        return session.get(Attempt, attempt_id) if attempt_id is not None else None
    return session.get(Attempt, reference)


def orphaned_attempt_id(session: Session, reference: str) -> str | None:
    """Return the attempt id of log rows ``reference`` names (an id or an event number).

    For a reference :func:`find_attempt` finds no attempt for: rows left in the log under it
    mean the attempt's row was deleted behind the service's back, which the audit reports.
    """
    reference = reference.strip()
    column = (
        TransitionLogEntry.event_number
        if is_event_number(reference)
        else TransitionLogEntry.attempt_id
    )
    return session.scalars(
        select(TransitionLogEntry.attempt_id).where(column == reference).limit(1)
    ).first()


def stream_rows(
    session: Session,
    columns: Sequence[str | ColumnElement[Any]],
    attempt_ids: Collection[str] | None = None,
    *,
    started: tuple[datetime, datetime] | None = None,
) -> Iterator[Row[Any]]:
    """Yield the log's rows, ``columns`` only, ordered by attempt and sequence number.

    ``started``: only the attempts started from the first time until before the second, each
    with its whole log (an export of a period still verifies and replays on its own).

    The order is the unique index's, so the database reads the log in one index scan, and
    rows come in batches (a server-side cursor on PostgreSQL) instead of all at once.
    """
    statement: Select = select(*log_columns(*columns)).order_by(LOG.c.attempt_id, LOG.c.seq)  # type: ignore[type-arg]
    if attempt_ids is not None:
        statement = statement.where(LOG.c.attempt_id.in_(list(attempt_ids)))
    if started is not None:
        # Their start rows are in the log's progress index (event, outcome, at, attempt).
        first, until = started
        statement = statement.where(
            LOG.c.attempt_id.in_(
                select(LOG.c.attempt_id)
                .where(LOG.c.event == "start", LOG.c.outcome == "applied")
                .where(LOG.c.at >= first, LOG.c.at < until)
            )
        )
    result = session.connection().execute(statement.execution_options(yield_per=BATCH))
    for batch in result.partitions():
        yield from batch


def plain_rows(session: Session, statement: Select, cursor_name: str) -> Iterator[Any]:  # type: ignore[type-arg]
    """Yield the statement's rows as the driver's plain tuples, in batches.

    For a pass over the whole log: every column is text or a number as stored (``at``
    formatted by the database), so SQLAlchemy's result rows would only add their cost (about a
    third of a pass). On PostgreSQL a server-side cursor (``cursor_name``) keeps memory flat
    on a log of any length.
    """
    connection = session.connection()
    if connection.dialect.name not in ("sqlite", "postgresql"):  # drivers we know the rows of
        for batch in connection.execute(statement.execution_options(yield_per=BATCH)).partitions():
            yield from batch
        return
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    values = compiled.construct_params()
    params = (
        tuple(values[name] for name in compiled.positiontup or ())
        if compiled.positional
        else values
    )
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    if connection.dialect.name == "postgresql":
        cursor = dbapi_connection.cursor(name=cursor_name)
    else:
        cursor = dbapi_connection.cursor()
    try:
        cursor.execute(compiled.string, params)
        while batch := cursor.fetchmany(BATCH):
            yield from batch
    finally:
        cursor.close()


def read_log(session: Session, attempt_id: str) -> list[TransitionLogEntry]:
    """Return one attempt's log rows in order (for showing, not for bulk work)."""
    return list(
        session.scalars(
            select(TransitionLogEntry)
            .where(TransitionLogEntry.attempt_id == attempt_id)
            .order_by(TransitionLogEntry.seq)
        )
    )


def story(rows: Sequence[TransitionLogEntry]) -> str:
    """One attempt's way through the flow, applied steps only, and where the person went:
    ``searching → skipped → handed_off; handed off to P1 at 2026-12-08 05:00:40 UTC``."""
    states = [row.target for row in rows if row.outcome == "applied"]
    line = " → ".join(states) if states else "(nothing applied)"
    for row in rows:
        if row.event == "hand_off" and row.outcome == "applied":
            client = _notes(row.detail).get("client", "?")
            line += f"; handed off to {client} at {format_time(row.at)}"
    return line


def _notes(detail: str) -> dict[str, object]:
    try:
        notes = json.loads(detail) if detail else {}
    except ValueError:
        return {}
    return notes if isinstance(notes, dict) else {}


def format_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_detail(detail: str) -> str:
    """Render a row's ``detail`` compactly: ``reason=link_unknown email=a***@e***.pl``.

    The service writes it as a JSON object of non-personal notes; anything else (a row edited
    behind the service's back) is shown as it is.
    """
    if not detail:
        return ""
    try:
        notes = json.loads(detail)
    except ValueError:
        return detail
    if not isinstance(notes, dict) or not notes:
        return detail
    return " ".join(f"{name}={_note(value)}" for name, value in notes.items())


def _note(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # Quoted when it would not read as one value.
    if not text or any(char.isspace() or char in '="' for char in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _printable(text: str) -> str:
    """Escape control characters (a newline in an edited row) so a row stays one line."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def log_table(rows: Sequence[TransitionLogEntry]) -> str:
    """Render log rows as a plain-text table that reads well in a terminal or a ticket."""
    header = (
        "seq",
        "time (UTC)",
        "event",
        "source → target",
        "outcome",
        "actor",
        "request id",
        "event number / code",
        "detail",
    )
    lines = [
        tuple(
            _printable(cell)
            for cell in (
                str(row.seq),
                row.at.strftime("%Y-%m-%d %H:%M:%S"),
                row.event,
                f"{row.source or '∅'} → {row.target}",
                row.outcome,
                row.actor,
                row.request_id,
                number_and_code(row.event_number, row.event_code),
                format_detail(row.detail),
            )
        )
        for row in rows
    ]
    return "\n".join(text_table(header, lines, rule=True))


def number_and_code(event_number: str | None, event_code: int | None) -> str:
    """``MIGRATION_000000000042 / 208``, or as much of it as there is."""
    return " / ".join(str(part) for part in (event_number, event_code) if part)


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "", rule: bool = False
) -> list[str]:
    """Lines of a plain-text table: columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def render(cells: Sequence[str]) -> str:
        return (
            indent
            + "  ".join(
                cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
            ).rstrip()
        )

    ruler = [indent + "  ".join("-" * width for width in widths)] if rule else []
    return [render(header), *ruler, *(render(row) for row in rows)]
