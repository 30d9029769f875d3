"""The leaves of the log's tree: every row of ``transition_log``, in the order of its id.

A leaf is the canonical JSON ``{"attempt_id":…,"hash":…,"seq":…}`` of a row: its place in its
attempt and its chain hash, which commits (under ``AUDIT_KEY``) to every field of the row and
to the rows before it. Only values of the log row itself, which nothing ever changes (a
retention purge empties other tables, never this one), so every anchor stays checkable.

**Why the id order is append-only.** Ids come from a sequence when a row is inserted, but
transactions commit in another order: a head taken between two commits could see row 101 and
not row 100, and a later tree with 100 before 101 would no longer extend it. So an anchor
covers rows only up to a point no transaction still in flight can fall under
(:func:`settled_end`): on PostgreSQL it reads the highest id while holding ``SHARE`` on the
table, which waits for every transaction that has inserted a row (each holds ``ROW
EXCLUSIVE`` from its ``INSERT``, taken before the sequence gives the row its id, until it
commits) and holds new ones back for that moment; every row ever to have an id below that
point is then committed, and later ones get higher ids (the sequence's cache is 1). On
SQLite one writer at a time takes the write lock, and a row's id is one past the highest
committed, so the highest id any snapshot sees is such a point already.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from itertools import pairwise

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ..audit.chain import _escape
from ..audit.export import ExportUnreadable, read_export
from ..audit.log import LOG, plain_rows

# How long taking the log's end may wait for the transactions writing it, holding new ones
# back meanwhile: a transition's transaction takes milliseconds, and a vacuum of the table
# gives way after a second (deadlock_timeout).
LOCK_TIMEOUT = "2s"


class LogBusy(RuntimeError):
    """The log's end could not be taken: a long transaction kept writing it."""


def leaf_hash(attempt_id: str, seq: int, chain_hash: str) -> bytes:
    """RFC 9162's leaf hash, SHA-256(0x00 ‖ leaf), of a row's leaf."""
    return hashlib.sha256(
        f'\x00{{"attempt_id":{_escape(attempt_id)},"hash":{_escape(chain_hash)},'
        f'"seq":{int.__repr__(seq)}}}'.encode()
    ).digest()


def settled_end(engine: Engine) -> int | None:
    """The highest log row id no transaction still in flight can fall under (module doc).

    None on SQLite, where the highest id in the snapshot the rows are read from is one.
    LogBusy when the writers did not pause within ``LOCK_TIMEOUT``.
    """
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            connection.exec_driver_sql("LOCK TABLE transition_log IN SHARE MODE")
            return connection.scalar(select(func.coalesce(func.max(LOG.c.id), 0)))
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise LogBusy(
                f"a transaction writing the log did not end within {LOCK_TIMEOUT}: "
                "nothing anchored; run it again"
            ) from None
        raise


def log_leaves(session: Session, after: int = 0, up_to: int | None = None) -> Iterator[bytes]:
    """The leaf hash of each row with ``after < id ≤ up_to``, in id order."""
    statement = (
        select(LOG.c.attempt_id, LOG.c.seq, LOG.c.hash).where(LOG.c.id > after).order_by(LOG.c.id)
    )
    if up_to is not None:
        statement = statement.where(LOG.c.id <= up_to)
    for attempt_id, seq, chain_hash in plain_rows(session, statement, "ueoz_leaves"):
        yield leaf_hash(attempt_id, seq, chain_hash)


class NoRowIds(ValueError):
    """The export was written before anchors: its rows carry no id, so no order."""


def export_leaves(lines: Iterable[str]) -> list[bytes]:
    """The leaf hashes of an ``audit export`` file's rows, in the order of their ids.

    ExportUnreadable when the file is not an export, or repeats an id; NoRowIds when its rows
    carry none.
    """
    rows: list[tuple[int, bytes]] = []
    for _, records in read_export(lines):
        for record in records:
            if "id" not in record:
                raise NoRowIds(
                    "its rows carry no id (written by a release before anchors): export the "
                    "log again to check it against anchors"
                )
            rows.append(
                (record["id"], leaf_hash(record["attempt_id"], record["seq"], record["hash"]))
            )
    rows.sort(key=lambda row: row[0])
    for (first, _), (second, _) in pairwise(rows):
        if first == second:
            raise ExportUnreadable(f"row id {first} appears twice, which audit export never writes")
    return [leaf for _, leaf in rows]
