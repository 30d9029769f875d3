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

import json
from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import Any

from sqlalchemy.orm import Session

from .export import EXPORT_COLUMNS, export_record
from .log import stream_rows
from .report import AuditReport, Finding

# Attempts compared per query (an IN list of ids).
ATTEMPTS_PER_QUERY = 500


class ExportUnreadable(ValueError):
    """The file is not an ``audit export``: a line is not one of its rows, or out of order."""


def compare_with_export(session: Session, lines: Iterable[str]) -> AuditReport:
    """Report, per attempt, the first exported row missing from the log or changed in it."""
    started = perf_counter()
    report = AuditReport("compare")
    compared: set[str] = set()  # attempts whose rows are behind us in the file
    batch: dict[str, list[dict[str, Any]]] = {}
    current: str | None = None
    for number, record in _rows(lines):
        attempt_id, seq = record["attempt_id"], record["seq"]
        if attempt_id != current:
            if attempt_id in compared or attempt_id in batch:
                raise ExportUnreadable(
                    f"line {number}: attempt {attempt_id}'s rows are not together, "
                    "as audit export writes them"
                )
            if len(batch) == ATTEMPTS_PER_QUERY:
                _compare(session, batch, report)
                compared.update(batch)
                batch = {}
            batch[attempt_id] = []
            current = attempt_id
        rows = batch[attempt_id]
        if rows and seq <= rows[-1]["seq"]:
            raise ExportUnreadable(
                f"line {number}: seq {seq} of attempt {attempt_id} comes after seq "
                f"{rows[-1]['seq']}, not in the order audit export writes"
            )
        rows.append(record)
    if batch:
        _compare(session, batch, report)
    if report.rows == 0:
        raise ExportUnreadable("the file holds no row of an audit export")
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
    changed = [column for column in EXPORT_COLUMNS if logged[column] != exported[column]]
    if changed:
        # The columns' names only: their values may be a masked address or a PESEL's hash.
        return "changed since the export: " + ", ".join(changed)
    return None


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each row of the file with its line number; ExportUnreadable at the first that is not."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not _is_row(record):
            raise ExportUnreadable(f"line {number} is not a row of an audit export")
        yield number, record


def _is_row(record: Any) -> bool:
    if not isinstance(record, dict) or set(record) != set(EXPORT_COLUMNS):
        return False
    attempt_id, seq = record["attempt_id"], record["seq"]
    return (
        # An attempt id is printable ASCII (it is printed back in the findings).
        isinstance(attempt_id, str)
        and attempt_id.isascii()
        and attempt_id.isprintable()
        and bool(attempt_id)
        # A sequence number is a whole number from 1 (JSON's true is not one).
        and type(seq) is int
        and seq >= 1
    )
