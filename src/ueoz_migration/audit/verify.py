"""Check the hash chain of the transition log (``ueoz-migration audit verify``).

For each attempt, in sequence order: the rows are numbered 1, 2, 3… with no gap; each row's
``prev_hash`` is the hash of the row before it (or the chain's start); each row's hash
recomputes from its fields with the audit key; the last row is the head the attempt keeps, so
a cut-off tail shows; and the flow version each row names is stored, with a definition that
still hashes to that version. The first link that fails is the one reported for the attempt:
everything after it rests on it.

Chains are per attempt, so a long log is verified by several processes at once, each over
its own range of attempt ids; their reports are joined in the order of the ranges, which is
the order a single pass would have found the same problems in.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import pairwise
from time import perf_counter
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import QueryableAttribute, Session

from ..db.engine import READ_ONLY, make_engine
from ..db.models import Attempt, FlowVersion
from ..flow import flow_version
from .chain import CHAINED_FIELDS, GENESIS, RowHasher
from .export import read_export
from .log import LOG, iso_at, log_columns, plain_rows
from .report import MAX_FINDINGS, AuditReport, Finding

ROW_COLUMNS = (*CHAINED_FIELDS, "prev_hash", "hash")
_SEQ, _AT, _FLOW, _PREV, _HASH = 1, 2, CHAINED_FIELDS.index("flow_version"), -2, -1

CHANGED = "hash does not recompute from the row's fields (the row was changed)"
# Said after the findings when every attempt checked fails at its first row's hash, which is
# what a key other than the one that wrote the log looks like.
WRONG_KEY_HINT = "every attempt fails at its first row: is AUDIT_KEY the key that wrote this log?"
WRONG_KEY_HINT_ONE = (
    "the first rows of other attempts fail too: is AUDIT_KEY the key that wrote this log?"
)
# How many other attempts' first rows are tried when a single attempt fails at its first row.
KEY_SAMPLE = 20

# A whole log of at least this many rows is split over processes; on a shorter one, starting
# them costs about as much as they save (a process verifies ~100,000 rows a second).
PARALLEL_FROM = 50_000
# Processes never outnumber the CPUs this one may run on, nor this.
MAX_PROCESSES = 8


class VerifyAborted(RuntimeError):
    """The check could not finish (a verifying process died); it concluded nothing."""


# The attempts a part verifies: ids from ``low`` (inclusive) to ``high`` (exclusive); None is
# open-ended.
Bounds = tuple[str | None, str | None]
_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


def flow_version_problems(session: Session) -> dict[str, str | None]:
    """Map each stored flow version to what is wrong with it, or None when its source is intact."""
    return {
        version: None
        if flow_version(source) == version
        else f"the stored definition of flow version {version[:12]}… no longer hashes to it "
        "(the flow definition was edited)"
        for version, source in session.execute(select(FlowVersion.version, FlowVersion.source))
    }


def _heads(
    session: Session, attempt_ids: Collection[str] | None, bounds: Bounds
) -> dict[str, tuple[int, str]]:
    # In id order, so that attempts with an empty log are reported in the order of attempts
    # by a single pass and by a split one alike.
    statement = select(Attempt.id, Attempt.log_seq, Attempt.log_head).order_by(Attempt.id)
    if attempt_ids is not None:
        statement = statement.where(Attempt.id.in_(list(attempt_ids)))
    statement = _within(statement, Attempt.id, bounds)
    return {attempt_id: (seq, head) for attempt_id, seq, head in session.execute(statement)}


def _within(
    statement: _S, column: ColumnElement[str] | QueryableAttribute[str], bounds: Bounds
) -> _S:
    low, high = bounds
    if low is not None:
        statement = statement.where(column >= low)
    if high is not None:
        statement = statement.where(column < high)
    return statement


def verify_chain(
    session: Session,
    key: bytes,
    attempt_ids: Collection[str] | None = None,
    *,
    processes: int | None = None,
) -> AuditReport:
    """Verify the chain of the given attempts' logs (all of them when None).

    The whole log is split over ``processes`` processes (by default as many as there are
    CPUs, once the log is long enough to gain from them); the report is the same either way.
    """
    started = perf_counter()
    url = session.get_bind().engine.url
    if attempt_ids is None and processes is None:
        # The highest row id counts the rows ever written (the log is append-only) without
        # reading the log.
        processes = default_processes(url, session.scalar(select(func.max(LOG.c.id))) or 0)
    if attempt_ids is None and (processes or 1) > 1 and _can_fork(url):
        report = _join(_verify_in_parallel(session, url, key, processes or 1))
    else:
        report = _join([_verify_part(session, key, attempt_ids, (None, None))])
    hint = _wrong_key_hint(session, key, report, attempt_ids)
    if hint is not None:
        report.notes.append(hint)
    report.seconds = perf_counter() - started
    return report


def _wrong_key_hint(
    session: Session, key: bytes, report: AuditReport, attempt_ids: Collection[str] | None
) -> str | None:
    """Say that the key looks wrong when every attempt checked fails at its first row's hash.

    One attempt failing there may have had its first row edited; so when only one attempt was
    checked, the first rows of (up to ``KEY_SAMPLE``) other attempts must fail too.
    """
    if report.attempts == 0 or report.first_rows_changed != report.attempts:
        return None
    if report.attempts > 1:
        return WRONG_KEY_HINT
    if attempt_ids is None:
        return None  # a log of one attempt: an edited first row or another key, no telling
    checked = list(attempt_ids)
    columns, at = _row_columns(session)
    statement = (
        select(*log_columns(*columns))
        .where(LOG.c.seq == 1, LOG.c.attempt_id.not_in(checked))
        .order_by(LOG.c.attempt_id)
        .limit(KEY_SAMPLE)
    )
    hasher = RowHasher(key)
    others = 0
    for row in session.execute(statement):
        values = tuple(row) if at is not None else _with_iso_at(tuple(row))
        if values[_PREV] == GENESIS and hasher(GENESIS, values) == values[_HASH]:
            return None  # the key verifies another attempt's first row
        others += 1
    return WRONG_KEY_HINT_ONE if others else None


def _row_columns(session: Session) -> tuple[list[str | ColumnElement[Any]], Any]:
    """The columns of a row as the chain hashes it, and ``at`` formatted by the database.

    The second is None where the database cannot format the time: :func:`_with_iso_at` then
    does it for each row.
    """
    at = iso_at(session)
    return [at if name == "at" and at is not None else name for name in ROW_COLUMNS], at


def _with_iso_at(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*row[:_AT], row[_AT].isoformat(timespec="microseconds"), *row[_AT + 1 :])


def default_processes(url: URL, rows: int) -> int:
    """Return how many processes verify a whole log of ``rows`` rows in ``url``'s database.

    One a CPU for a long log, one for a short one, with a PostgreSQL server on the same CPUs
    too: beside one, two processes took 0.60–0.93 s over 100,000 rows where one took
    0.93–1.56 s, in four runs on 2 CPUs (docs/performance.md).
    """
    if rows < PARALLEL_FROM or not _can_fork(url):
        return 1
    return min(len(os.sched_getaffinity(0)), MAX_PROCESSES)


def _can_fork(url: URL) -> bool:
    """Verify in forked processes only where they exist and can open the same database."""
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    return not in_memory and "fork" in multiprocessing.get_all_start_methods()


def _verify_in_parallel(
    session: Session, url: URL, key: bytes, processes: int
) -> list[tuple[AuditReport, AuditReport]]:
    """Split the attempts into ranges of about equal size and verify each in a process."""
    bounds = _split(session, processes)
    # Forked, not spawned: a fresh interpreter would spend longer importing than verifying.
    # Each child opens its own connection; the parent's stays untouched.
    # concurrent.futures rather than multiprocessing.Pool: a Pool never hears of a child that
    # died (the out-of-memory killer, a kill -9) and waits for its result for ever; an
    # executor raises BrokenProcessPool, and the auditor gets an answer.
    context = multiprocessing.get_context("fork")
    target = url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(len(bounds), mp_context=context) as executor:
        try:
            return list(executor.map(partial(_verify_range, target, key), bounds))
        except BrokenProcessPool:
            raise VerifyAborted(
                "a verifying process ended before it reported (killed, or out of memory?); "
                "nothing was concluded: run the check again"
            ) from None


def _split(session: Session, parts: int) -> list[Bounds]:
    """Cut the attempt ids into ``parts`` contiguous ranges holding about as many attempts.

    The first and last ranges are open-ended, so the ranges cover every id, also those of log
    rows whose attempt does not exist.
    """
    count = session.scalar(select(func.count()).select_from(Attempt)) or 0
    cuts: list[str] = []
    for part in range(1, parts):
        cut = session.scalar(
            select(Attempt.id).order_by(Attempt.id).offset(part * count // parts).limit(1)
        )
        if cut is not None and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    edges: list[str | None] = [None, *cuts, None]
    return list(pairwise(edges))


def _verify_range(url: str, key: bytes, bounds: Bounds) -> tuple[AuditReport, AuditReport]:
    """Verify one range of attempts in a process of its own, on a connection of its own."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            # Read the heads and the rows in one snapshot, so that a transition committed
            # meanwhile is not taken for a row added past the head; on SQLite, without
            # taking the write lock (which would make the parts wait for each other).
            if engine.dialect.name == "sqlite":
                session.connection(execution_options={READ_ONLY: True})
            else:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            return _verify_part(session, key, None, bounds)
    finally:
        engine.dispose()


def _join(parts: list[tuple[AuditReport, AuditReport]]) -> AuditReport:
    """Put the parts' reports together in the order a single pass would have found it all.

    A single pass reports the problems in the rows, attempt by attempt, then the attempts whose
    log is empty; each part reports both for its own range, and the ranges are in order.
    """
    report = AuditReport("verify")
    for found in [rows for rows, _ in parts] + [empty for _, empty in parts]:
        report.attempts += found.attempts
        report.rows += found.rows
        report.broken_attempts += found.broken_attempts
        report.first_rows_changed += found.first_rows_changed
        report.findings.extend(found.findings[: MAX_FINDINGS - len(report.findings)])
    return report


def _stream(
    session: Session,
    columns: list[str | ColumnElement[Any]],
    attempt_ids: Collection[str] | None,
    bounds: Bounds,
) -> Iterator[Any]:
    """Yield the log's rows of the range, ordered by attempt and sequence number, in batches."""
    statement = select(*log_columns(*columns)).order_by(LOG.c.attempt_id, LOG.c.seq)
    if attempt_ids is not None:
        statement = statement.where(LOG.c.attempt_id.in_(list(attempt_ids)))
    statement = _within(statement, LOG.c.attempt_id, bounds)
    return plain_rows(session, statement, "ueoz_verify")


def _verify_part(
    session: Session, key: bytes, attempt_ids: Collection[str] | None, bounds: Bounds
) -> tuple[AuditReport, AuditReport]:
    """Verify the attempts in range: what the rows show, and which attempts have no rows."""
    report = AuditReport("verify")
    heads = _heads(session, attempt_ids, bounds)
    flows = flow_version_problems(session)
    hasher = RowHasher(key)
    columns, at = _row_columns(session)

    current: str | None = None
    expected, prev, broken = 1, GENESIS, False
    head: tuple[int, str] | None = None
    head_seq = 0
    rows = 0
    for row in _stream(session, columns, attempt_ids, bounds):
        rows += 1
        if at is None:  # a database that cannot format the time: do it here
            row = _with_iso_at(row)
        attempt_id = row[0]
        if attempt_id != current:
            if current is not None and not broken:
                _check_tail(report, current, expected, prev, head)
            current, expected, prev, broken = attempt_id, 1, GENESIS, False
            report.attempts += 1
            head = heads.pop(attempt_id, None)
            if head is None:
                report.add(Finding(attempt_id, row[_SEQ], "rows of an attempt that does not exist"))
                broken = True
            else:
                head_seq = head[0]
        if broken:
            continue
        seq = row[_SEQ]
        if expected > head_seq:
            # Every row up to the head checked out, and here is one more: whatever its hash
            # (wrong, from someone without the key), it was added outside the service.
            problem = f"the log goes on past the attempt's head at seq {head_seq} (rows were added)"
        else:
            problem = _broken_link(report, hasher, "log", expected, prev, row)
        if problem is None:
            version = row[_FLOW]
            if version not in flows:
                problem = f"flow version {version[:12]}… is not stored in flow_versions"
            else:
                problem = flows[version]
        if problem is not None:
            report.add(Finding(attempt_id, expected if seq > expected else seq, problem))
            broken = True
            continue
        prev, expected = row[_HASH], seq + 1
    if current is not None and not broken:
        _check_tail(report, current, expected, prev, head)
    report.rows = rows
    empty = AuditReport("verify")
    for attempt_id, (log_seq, _) in heads.items():
        empty.attempts += 1
        empty.add(
            Finding(attempt_id, 1, f"the log is empty but the attempt's head is at seq {log_seq}")
        )
    return report, empty


def _broken_link(
    report: AuditReport,
    hasher: RowHasher,
    holder: str,
    expected: int,
    prev: str,
    row: tuple[Any, ...],
) -> str | None:
    """What breaks the chain at ``row`` (``ROW_COLUMNS``), where seq ``expected`` was due.

    None when the row links on from ``prev``. ``holder`` names what holds the rows in the
    messages: the log, or an export of it. A changed first row is counted, for the wrong-key
    hint.
    """
    seq = row[_SEQ]
    if seq > expected:
        gap = (
            f"the {holder} starts at seq {seq}"
            if expected == 1
            else f"the {holder} goes from seq {expected - 1} to {seq}"
        )
        return f"row {expected} is missing ({gap})"
    if seq != expected:
        return f"seq {seq} where {expected} was expected"
    if row[_PREV] != prev:
        before = "the chain's start" if expected == 1 else f"row {expected - 1}"
        return (
            f"prev_hash does not match the hash of {before} (rows were removed, added or reordered)"
        )
    if hasher(prev, row) != row[_HASH]:
        if seq == 1:
            report.first_rows_changed += 1
        return CHANGED
    return None


def _check_tail(
    report: AuditReport,
    attempt_id: str,
    expected: int,
    last_hash: str,
    head: tuple[int, str] | None,
) -> None:
    """The last row must be the head the attempt recorded, or the log's tail was cut.

    (A row past the head is reported as it is read.)
    """
    assert head is not None
    head_seq, head_hash = head
    last_seq = expected - 1
    if last_seq < head_seq:
        missing = f"row {expected}" if head_seq == expected else f"rows {expected}–{head_seq}"
        report.add(
            Finding(
                attempt_id,
                expected,
                f"{missing} missing: the log ends at seq {last_seq} but the attempt's head is "
                f"at seq {head_seq} (the log's tail was cut off)",
            )
        )
    elif last_hash != head_hash:
        report.add(Finding(attempt_id, last_seq, "the last row's hash is not the attempt's head"))


# What an export cannot show, said after every check of one.
EXPORT_LIMITS = (
    "an export alone cannot show rows or attempts left out, from the log before it was "
    "written or from the file since, nor its attempts' heads: audit verify and audit "
    "compare, against the database, can"
)


# Said instead when the export is checked against anchors too.
EXPORT_LIMITS_ANCHORED = (
    "an export cannot show rows left out of it or of the log after its latest anchor, nor "
    "its attempts' heads: audit verify against the database can"
)


def verify_export(lines: Iterable[str], key: bytes, *, anchored: bool = False) -> AuditReport:
    """Verify the chain inside an ``audit export`` file, with no database.

    Each attempt's rows must run from seq 1 without a gap, each ``prev_hash`` must be the
    hash of the row before (the chain's start for seq 1), and each hash must recompute from
    its row with the key; the first link that fails is reported for the attempt.
    ExportUnreadable when the file is not an export.
    """
    started = perf_counter()
    report = AuditReport("verify")
    hasher = RowHasher(key)
    for attempt_id, records in read_export(lines):
        report.attempts += 1
        report.rows += len(records)
        expected, prev = 1, GENESIS
        for record in records:
            # The reader keeps seq rising, so a seq past the one expected is a missing row.
            problem = _broken_link(report, hasher, "export", expected, prev, _as_row(record))
            if problem is not None:
                report.add(Finding(attempt_id, expected, problem))
                break
            prev, expected = record["hash"], record["seq"] + 1
    if report.attempts > 1 and report.first_rows_changed == report.attempts:
        report.notes.append(WRONG_KEY_HINT.replace("this log", "the exported log"))
    report.notes.append(EXPORT_LIMITS_ANCHORED if anchored else EXPORT_LIMITS)
    report.seconds = perf_counter() - started
    return report


def _as_row(record: dict[str, Any]) -> tuple[Any, ...]:
    # A row as verify reads it from the database (``ROW_COLUMNS``): the chained fields in
    # order, ``at`` already in its ISO form, which is how the export writes it.
    return tuple(record[name] for name in ROW_COLUMNS)
