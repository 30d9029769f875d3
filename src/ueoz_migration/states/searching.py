"""``searching``: the worker looks the person up in the e-PLOZ directory."""

from __future__ import annotations

from ..domain.codes import EventCode
from .base import StateBehaviour


class Searching(StateBehaviour):
    def record_eploz_account(self, eploz_account_id: int) -> None:
        """Remember which e-PLOZ account the search matched, if it still matches.

        An import may have changed the directory since the search read it: that is a
        conflict, and the worker searches again when its lease ends.
        """
        account = self.matched_eploz_account(eploz_account_id, changed="conflict")
        self.attempt.eploz_account_id = account.id
        self.attempt.search_lease_until = None

    def record_search_failure(self, code: int) -> None:
        """Keep the event code that says why the search found no usable account."""
        self.attempt.event_code = int(EventCode(code))
        self.attempt.search_lease_until = None
