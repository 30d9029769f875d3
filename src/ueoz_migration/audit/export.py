"""Write the transition log as JSON lines (``ueoz-migration audit export``).

One object per row, with every chained field exactly as it was hashed (times in ISO 8601
UTC), the row's ``prev_hash`` and ``hash``, so that anyone holding the audit key can verify
the export without the database. The rows hold no personal data in clear: a PESEL appears
only as its hash keyed with ``PESEL_HASH_KEY`` (which the audit key does not reproduce, so an
auditor cannot try every PESEL against it), an e-mail address only as ``a***@k***.pl``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy.orm import Session

from .chain import CHAINED_FIELDS
from .log import stream_rows

EXPORT_COLUMNS = (*CHAINED_FIELDS, "prev_hash", "hash")


def export_log(session: Session, out: TextIO, attempt_ids: Collection[str] | None = None) -> int:
    """Write the given attempts' rows (all when None) to ``out``; return how many."""
    count = 0
    for row in stream_rows(session, EXPORT_COLUMNS, attempt_ids):
        out.write(json.dumps(export_record(row), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def export_record(row: Sequence[Any]) -> dict[str, Any]:
    """One row of the log (``EXPORT_COLUMNS``) as the export writes it."""
    record = dict(zip(EXPORT_COLUMNS, row, strict=True))
    at = record["at"]
    if isinstance(at, datetime):
        record["at"] = at.isoformat(timespec="microseconds")
    return record
