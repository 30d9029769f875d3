"""``error``: no e-PLOZ account can be migrated; the person may create a new account."""

from __future__ import annotations

from sqlalchemy import insert

from ..db.models import EventNumber
from ..domain.event_numbers import format_event_number
from .base import StateBehaviour

# Built once (see journey.py, where the transition's own statements are).
MINT_EVENT_NUMBER = insert(EventNumber).returning(EventNumber.id)


class Error(StateBehaviour):
    def mint_event_number(self) -> None:
        """Give the attempt a new event number for the helpdesk.

        The number is the key of a row in ``event_numbers``: a database sequence that every
        process and machine of a deployment shares and that never hands out a value twice.
        """
        # A plain INSERT … RETURNING on the transaction's connection: the key is all we need,
        # and it leaves the attempt's own changes to go out once, with its log row.
        minted = self.session.connection().scalar(
            MINT_EVENT_NUMBER, {"attempt_id": self.attempt.id, "minted_at": self.context.now}
        )
        assert minted is not None
        self.attempt.event_number = format_event_number(minted)

    def start_without_eploz(self) -> None:
        """Go on to a new UEOZ account that takes nothing over from e-PLOZ."""
        self.attempt.eploz_account_id = None
        self.attempt.email_prefill = None
