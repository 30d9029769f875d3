"""Check the hash chain of the transition log (``ueoz-migration audit verify``).

For each attempt, in sequence order: the rows are numbered 1, 2, 3… with no gap; each row's
``prev_hash`` is the hash of the row before it (or the chain's start); each row's hash
recomputes from its fields with the audit key; the last row is the head the attempt keeps, so
a cut-off tail shows; and the flow version each row names is stored, with a definition that
still hashes to that version. The first link that fails is the one reported for the attempt:
everything after it rests on it.
"""

from __future__ import annotations

from collections.abc import Collection
from time import perf_counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Attempt, FlowVersion
from ..flow import flow_version
from .chain import CHAINED_FIELDS, GENESIS, RowHasher
from .log import iso_at, stream_rows
from .report import AuditReport, Finding

ROW_COLUMNS = (*CHAINED_FIELDS, "prev_hash", "hash")
_SEQ, _AT, _FLOW, _PREV, _HASH = 1, 2, CHAINED_FIELDS.index("flow_version"), -2, -1


def flow_version_problems(session: Session) -> dict[str, str | None]:
    """Map each stored flow version to what is wrong with it, or None when its source is intact."""
    return {
        version: None
        if flow_version(source) == version
        else f"the stored definition of flow version {version[:12]}… no longer hashes to it "
        "(the flow definition was edited)"
        for version, source in session.execute(select(FlowVersion.version, FlowVersion.source))
    }


def attempt_heads(
    session: Session, attempt_ids: Collection[str] | None
) -> dict[str, tuple[int, str]]:
    """Return each attempt's chain head: the seq and hash of the last row it wrote."""
    statement = select(Attempt.id, Attempt.log_seq, Attempt.log_head)
    if attempt_ids is not None:
        statement = statement.where(Attempt.id.in_(list(attempt_ids)))
    return {attempt_id: (seq, head) for attempt_id, seq, head in session.execute(statement)}


def verify_chain(
    session: Session, key: bytes, attempt_ids: Collection[str] | None = None
) -> AuditReport:
    """Verify the chain of the given attempts' logs (all of them when None)."""
    started = perf_counter()
    report = AuditReport("verify")
    heads = attempt_heads(session, attempt_ids)
    flows = flow_version_problems(session)
    hasher = RowHasher(key)
    at = iso_at(session)
    columns = [at if name == "at" and at is not None else name for name in ROW_COLUMNS]

    current: str | None = None
    expected, prev, broken = 1, GENESIS, False
    head: tuple[int, str] | None = None
    rows = 0
    for row in stream_rows(session, columns, attempt_ids):
        rows += 1
        if at is None:  # a database that cannot format the time: do it here
            row = (*row[:_AT], row[_AT].isoformat(timespec="microseconds"), *row[_AT + 1 :])
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
        if broken:
            continue
        seq = row[_SEQ]
        problem = None
        if seq != expected:
            problem = (
                f"row {expected} is missing (the log goes from seq {expected - 1} to {seq})"
                if seq > expected
                else f"seq {seq} where {expected} was expected"
            )
        elif row[_PREV] != prev:
            before = "the chain's start" if expected == 1 else f"row {expected - 1}"
            problem = (
                f"prev_hash does not match the hash of {before} "
                "(rows were removed, added or reordered)"
            )
        elif hasher(prev, row) != row[_HASH]:
            problem = "hash does not recompute from the row's fields (the row was changed)"
        else:
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
    for attempt_id, (log_seq, _) in heads.items():
        report.attempts += 1
        report.add(
            Finding(attempt_id, 1, f"the log is empty but the attempt's head is at seq {log_seq}")
        )
    report.rows = rows
    report.seconds = perf_counter() - started
    return report


def _check_tail(
    report: AuditReport,
    attempt_id: str,
    expected: int,
    last_hash: str,
    head: tuple[int, str] | None,
) -> None:
    """The last row must be the head the attempt recorded, or the log's tail was cut."""
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
    elif last_seq > head_seq:
        report.add(
            Finding(
                attempt_id,
                head_seq + 1,
                f"the log goes on past the attempt's head at seq {head_seq} (rows were added)",
            )
        )
    elif last_hash != head_hash:
        report.add(Finding(attempt_id, last_seq, "the last row's hash is not the attempt's head"))
