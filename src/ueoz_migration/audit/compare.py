"""Check the log against an earlier export of it (``ueoz-migration audit compare``).

The hash chain shows a log edited by someone without the audit key; it cannot show what a
holder of the key rewrote (every web instance, worker and auditor holds it), nor a tail cut
off together with the attempt's head, which needs no key at all (docs/audit.md). An export
kept out of their reach can: the log only ever grows, so every row an earlier export holds
must still be in the log, field for field. Rows written since the export are not looked at.

The export is read as ``audit export`` writes it, each attempt's rows together and in order,
and compared a few hundred attempts at a time, so memory stays flat whatever its length.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter
from typing import Any

from sqlalchemy.orm import Session

from .export import EXPORT_COLUMNS, export_record, read_export
from .log import stream_rows
from .report import AuditReport, Finding

# Attempts compared per query (an IN list of ids).
ATTEMPTS_PER_QUERY = 500


def compare_with_export(session: Session, lines: Iterable[str]) -> AuditReport:
    """Report, per attempt, the first exported row missing from the log or changed in it.

    ExportUnreadable when the file is not an ``audit export``.
    """
    started = perf_counter()
    report = AuditReport("compare")
    batch: dict[str, list[dict[str, Any]]] = {}
    for attempt_id, rows in read_export(lines):
        if len(batch) == ATTEMPTS_PER_QUERY:
            _compare(session, batch, report)
            batch = {}
        batch[attempt_id] = rows
    if batch:
        _compare(session, batch, report)
    report.seconds = perf_counter() - started
    return report


def _compare(session: Session, batch: dict[str, list[dict[str, Any]]], report: AuditReport) -> None:
    logged: dict[tuple[str, int], dict[str, Any]] = {}
    for row in stream_rows(session, EXPORT_COLUMNS, list(batch)):
        record = export_record(row)
        logged[(record["attempt_id"], record["seq"])] = record
    for attempt_id, exported in batch.items():
        report.attempts += 1
        report.rows += len(exported)
        for record in exported:
            problem = _difference(record, logged.get((attempt_id, record["seq"])))
            if problem is not None:
                report.add(Finding(attempt_id, record["seq"], problem))
                break


def _difference(exported: dict[str, Any], logged: dict[str, Any] | None) -> str | None:
    if logged is None:
        return "in the export, no longer in the log (cut off or deleted since)"
    changed = [
        column
        for column in EXPORT_COLUMNS
        if column in exported and logged[column] != exported[column]
    ]
    if changed:
        # The columns' names only: their values may be a masked address or a PESEL's hash.
        return "changed since the export: " + ", ".join(changed)
    return None
