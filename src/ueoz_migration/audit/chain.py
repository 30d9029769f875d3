"""The hash chain that makes the transition log tamper-evident.

Each row's hash is an HMAC (keyed with ``AUDIT_KEY``) over the previous row's hash and the
row's own fields, in a canonical JSON form. An edited, deleted, inserted or reordered row
breaks the chain at that row; a cut-off tail no longer meets the head kept on the attempt.
The key means that someone who can write to the database still cannot forge a chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

GENESIS = "0" * 64

CHAINED_FIELDS = (
    "attempt_id",
    "seq",
    "at",
    "event",
    "source",
    "target",
    "outcome",
    "actor",
    "request_id",
    "flow_version",
    "event_number",
    "event_code",
    "pesel_hash",
    "detail",
)


def canonical(fields: Mapping[str, Any]) -> bytes:
    """Serialise the chained fields the same way on every machine and database."""
    values = {}
    for name in CHAINED_FIELDS:
        value = fields[name]
        if isinstance(value, datetime):
            value = value.isoformat(timespec="microseconds")
        values[name] = value
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(key: bytes, prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hmac.new(key, prev_hash.encode("ascii") + canonical(fields), hashlib.sha256).hexdigest()
