"""Check the log against an earlier export of it (``ueoz-migration audit compare``).

The hash chain shows a log edited by someone without the audit key; it cannot show what a
holder of the key rewrote (every web instance, worker and auditor holds it), nor a tail cut
off together with the attempt's head, which needs no key at all (docs/audit.md). An export
kept out of their reach can: the log only ever grows, so every row an earlier export holds
must still be in the log, field for field. Rows written since the export are not looked at.
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

# Attempts read from the log per query (an IN list of ids).
_ATTEMPTS_PER_QUERY = 500


class ExportUnreadable(ValueError):
    """A line of the file is not a row of an ``audit export``."""


def compare_with_export(session: Session, lines: Iterable[str]) -> AuditReport:
    """Report, per attempt, the first exported row missing from the log or changed in it."""
    started = perf_counter()
    report = AuditReport("compare")
    exported = _exported_rows(lines)
    attempt_ids = list(exported)
    for start in range(0, len(attempt_ids), _ATTEMPTS_PER_QUERY):
        chunk = attempt_ids[start : start + _ATTEMPTS_PER_QUERY]
        logged: dict[tuple[str, int], dict[str, Any]] = {}
        for row in stream_rows(session, EXPORT_COLUMNS, chunk):
            record = export_record(row)
            logged[(record["attempt_id"], record["seq"])] = record
        for attempt_id in chunk:
            report.attempts += 1
            for record in exported[attempt_id]:
                report.rows += 1
                problem = _difference(record, logged.get((attempt_id, record["seq"])))
                if problem is not None:
                    report.add(Finding(attempt_id, record["seq"], problem))
                    break
    report.seconds = perf_counter() - started
    return report


def _difference(exported: dict[str, Any], logged: dict[str, Any] | None) -> str | None:
    if logged is None:
        return "in the export, no longer in the log (cut off or deleted since)"
    changed = [column for column in EXPORT_COLUMNS if logged[column] != exported.get(column)]
    if changed:
        # The columns' names only: their values may be a masked address or a PESEL's hash.
        return "changed since the export: " + ", ".join(changed)
    return None


def _exported_rows(lines: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for number, record in _records(lines):
        if not (
            isinstance(record, dict)
            and set(record) == set(EXPORT_COLUMNS)
            and isinstance(record["attempt_id"], str)
            and isinstance(record["seq"], int)
        ):
            raise ExportUnreadable(f"line {number} is not a row of an audit export")
        rows.setdefault(record["attempt_id"], []).append(record)
    for records in rows.values():
        records.sort(key=lambda record: record["seq"])
    return rows


def _records(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            raise ExportUnreadable(f"line {number} is not a row of an audit export") from None
