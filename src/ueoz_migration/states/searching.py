"""``searching``: the worker looks the person up in the e-PLOZ directory."""

from __future__ import annotations

from ..db.models import EPLOZ_REMOVED, EplozAccount
from ..domain.codes import EventCode
from .base import Rejected, StateBehaviour


class Searching(StateBehaviour):
    def record_eploz_account(self, eploz_account_id: int) -> None:
        """Remember which e-PLOZ account the search matched, if the directory still has it.

        An import with ``--full`` may have removed it since the search read the directory:
        the row is read under a share lock, which waits for such an import to commit, and a
        removed account is a conflict (the worker searches again when its lease ends).
        """
        account = self.session.get(EplozAccount, eploz_account_id, with_for_update={"read": True})
        if account is None or account.status == EPLOZ_REMOVED:
            raise Rejected("conflict")
        self.attempt.eploz_account_id = eploz_account_id
        self.attempt.search_lease_until = None

    def record_search_failure(self, code: int) -> None:
        """Keep the event code that says why the search found no usable account."""
        self.attempt.event_code = int(EventCode(code))
        self.attempt.search_lease_until = None
