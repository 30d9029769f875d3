"""Write the transition log as JSON lines (``ueoz-migration audit export``), and read it back.

One object per row, with every chained field exactly as it was hashed (times in ISO 8601
UTC), the row's ``prev_hash`` and ``hash``, so that anyone holding the audit key can verify
the export without the database. The rows hold no personal data in clear: a PESEL appears
only as its hash keyed with ``PESEL_HASH_KEY`` (which the audit key does not reproduce, so an
auditor cannot try every PESEL against it), an e-mail address only as ``a***@k***.pl``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy.orm import Session

from .chain import CHAINED_FIELDS
from .log import stream_rows

# ``id`` gives the log's global order, in which anchors hash its rows (anchors/leaves.py);
# exports written before anchors lack it, and are read all the same.
EXPORT_COLUMNS = ("id", *CHAINED_FIELDS, "prev_hash", "hash")


def export_log(
    session: Session,
    out: TextIO,
    attempt_ids: Collection[str] | None = None,
    *,
    started: tuple[datetime, datetime] | None = None,
) -> int:
    """Write the given attempts' rows (all when None) to ``out``; return how many.

    ``started``: only the attempts started in that period, each whole (``stream_rows``).
    """
    count = 0
    for line in export_lines(session, attempt_ids, started=started):
        out.write(line)
        count += 1
    return count


def export_lines(
    session: Session,
    attempt_ids: Collection[str] | None = None,
    *,
    started: tuple[datetime, datetime] | None = None,
) -> Iterator[str]:
    """Each row of the export as its line, newline included, as they come from the log."""
    for row in stream_rows(session, EXPORT_COLUMNS, attempt_ids, started=started):
        yield json.dumps(export_record(row), ensure_ascii=False, separators=(",", ":")) + "\n"


def export_record(row: Sequence[Any]) -> dict[str, Any]:
    """One row of the log (``EXPORT_COLUMNS``) as the export writes it."""
    record = dict(zip(EXPORT_COLUMNS, row, strict=True))
    at = record["at"]
    if isinstance(at, datetime):
        record["at"] = at.isoformat(timespec="microseconds")
    return record


class ExportUnreadable(ValueError):
    """The file is not an ``audit export``: a line is not one of its rows, or out of order."""


def read_export(lines: Iterable[str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each attempt of an export with its rows, as ``export_log`` wrote them.

    One attempt's rows are held at a time, so memory grows by no more than an id per
    attempt whatever the file's length. ExportUnreadable at the first line that is not a
    row, or that breaks the order ``export_log`` writes in (each attempt's rows together,
    by rising seq); also for a file with no row at all.
    """
    seen: set[str] = set()
    attempt_id: str | None = None
    rows: list[dict[str, Any]] = []
    for number, record in _rows(lines):
        if record["attempt_id"] != attempt_id:
            if attempt_id is not None:
                yield attempt_id, rows
            attempt_id, rows = record["attempt_id"], []
            if attempt_id in seen:
                raise ExportUnreadable(
                    f"line {number}: attempt {attempt_id}'s rows are not together, "
                    "as audit export writes them"
                )
            seen.add(attempt_id)
        if rows and record["seq"] <= rows[-1]["seq"]:
            raise ExportUnreadable(
                f"line {number}: seq {record['seq']} of attempt {attempt_id} comes after seq "
                f"{rows[-1]['seq']}, not in the order audit export writes"
            )
        rows.append(record)
    if attempt_id is None:
        raise ExportUnreadable("the file holds no row of an audit export")
    yield attempt_id, rows


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each row of the file with its line number; ExportUnreadable at the first that is not."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, a number too long, nesting too deep
            record = None
        if not _is_row(record):
            raise ExportUnreadable(f"line {number} is not a row of an audit export")
        yield number, record


# The fields export_log writes as text, and those the checks print back (kept printable, as
# the attempt id is, so that a crafted file cannot send control sequences to a terminal).
_TEXT = ("at", "actor", "request_id", "pesel_hash", "detail", "prev_hash", "hash")
_PRINTED = ("attempt_id", "event", "source", "target", "outcome")
_FLOW_VERSION = re.compile(r"[0-9a-f]{64}")


def _is_row(record: Any) -> bool:
    """Whether ``record`` has the fields, and the types, that ``export_log`` writes."""
    if not isinstance(record, dict) or set(record) - {"id"} != set(EXPORT_COLUMNS) - {"id"}:
        return False
    if "id" in record and (type(record["id"]) is not int or record["id"] < 1):
        return False
    number, code, version = record["event_number"], record["event_code"], record["flow_version"]
    return (
        all(isinstance(record[name], str) for name in _TEXT)
        # Printed back in findings: printable ASCII for the id, printable text for the rest.
        and all(isinstance(record[name], str) and record[name].isprintable() for name in _PRINTED)
        and record["attempt_id"].isascii()
        and bool(record["attempt_id"])
        # A sequence number is a whole number from 1 (JSON's true is not one).
        and type(record["seq"]) is int
        and record["seq"] >= 1
        and (number is None or (isinstance(number, str) and number.isprintable()))
        and (code is None or type(code) is int)
        # A flow version names a file of the release's flow history: a SHA-256 in hex only.
        and isinstance(version, str)
        and _FLOW_VERSION.fullmatch(version) is not None
    )
