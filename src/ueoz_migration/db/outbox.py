"""Read the outbox: an attempt's latest verification e-mail, for the waiting page and helpdesk."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from .models import LINK_MAIL, OutboxMessage

# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
LATEST_LINK_MAIL = (
    select(OutboxMessage)
    .where(OutboxMessage.attempt_id == bindparam("attempt"))
    .where(OutboxMessage.kind == LINK_MAIL)
    .order_by(OutboxMessage.id.desc())
    .limit(1)
)


def latest_link_mail(session: Session, attempt_id: str) -> OutboxMessage | None:
    """The attempt's latest verification e-mail as the outbox holds it (sent, waiting,
    withdrawn or failed), or None when none was written."""
    return session.scalars(LATEST_LINK_MAIL, {"attempt": attempt_id}).first()
