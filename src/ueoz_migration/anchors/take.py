"""Take an anchor of the log (``ueoz-migration audit anchor``): sign its head, write it out.

The tree goes on from the compact range of the last anchor this key signed (kept in
``log_anchors``, and trusted only when its signature holds), so only the rows added since are
read and hashed; without one, the whole log is. The anchor covers the log up to its settled
end (leaves.py says why no row can later appear below it), is written to its file, never
over another, and only then recorded as the one the next anchor goes on from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from time import perf_counter

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from ..audit.log import LOG
from ..db.engine import snapshot, transaction
from ..db.models import LogAnchor
from .document import Anchor, AnchorRefused, read_document, signed_document, write_anchor
from .keys import key_id
from .leaves import log_leaves, settled_end
from .merkle import CompactRange

log = structlog.get_logger(__name__)

# Stored anchors tried, newest first, for one whose signature holds.
STORED_TRIED = 5


@dataclass(frozen=True)
class Taken:
    """An anchor written: where, how many rows it hashed anew, and in how long."""

    anchor: Anchor
    path: Path
    hashed: int
    seconds: float


def take_anchor(
    engine: Engine,
    sessions: sessionmaker[Session],
    key: Ed25519PrivateKey,
    directory: Path,
    now: datetime,
    *,
    unless_within: timedelta | None = None,
) -> Taken | None:
    """Anchor the log into ``directory``; None when ``unless_within`` and one is that recent.

    LogBusy when the log's end could not be taken; FileExistsError or OSError when the file
    cannot be written (then nothing is recorded).
    """
    started = perf_counter()
    public = key.public_key()
    with snapshot(sessions) as session:
        previous = _last_signed(session, public)
    if (
        unless_within is not None
        and previous is not None
        and previous.taken_at > now - unless_within
    ):
        return None
    end = settled_end(engine)
    compact = previous.compact_range if previous is not None else CompactRange()
    first_row = previous.first_row if previous is not None else None
    last_id = previous.last_log_id if previous is not None else 0
    with snapshot(sessions) as session:
        if end is None:  # SQLite: the snapshot's own end is settled
            end = session.scalar(select(func.coalesce(func.max(LOG.c.id), 0))) or 0
        leaves = list(log_leaves(session, after=last_id, up_to=end))
    compact.extend(leaves)
    if first_row is None and leaves:
        first_row = leaves[0]
    anchor = Anchor(
        taken_at=now.replace(microsecond=0),
        size=compact.size,
        root=compact.root(),
        frontier=tuple(compact.hashes),
        first_row=first_row,
        previous=(previous.size, previous.root) if previous is not None else None,
        last_log_id=max(end, last_id),
        key=key_id(public),
    )
    document = signed_document(anchor, key)
    path = write_anchor(directory, anchor.file_name, document)
    with transaction(sessions) as session:
        session.add(
            LogAnchor(
                taken_at=anchor.taken_at,
                size=anchor.size,
                last_log_id=anchor.last_log_id,
                document=document,
            )
        )
    return Taken(anchor, path, len(leaves), perf_counter() - started)


def _last_signed(session: Session, public) -> Anchor | None:  # type: ignore[no-untyped-def]
    """The largest anchor recorded whose signature holds with the key, or None."""
    documents = session.scalars(
        select(LogAnchor.document)
        .order_by(LogAnchor.size.desc(), LogAnchor.id.desc())
        .limit(STORED_TRIED)
    )
    for document in documents:
        try:
            return read_document(document, public)
        except AnchorRefused as refusal:
            # Another key's (the key was changed), or edited in the database: the tree is
            # then hashed from the whole log, as the first anchor's is.
            log.warning("anchor.stored_head_refused", reason=str(refusal))
    return None
