"""``found``: the person confirms the e-PLOZ account found for them."""

from __future__ import annotations

from ..db.models import EplozAccount
from .base import StateBehaviour


class Found(StateBehaviour):
    def prefill_eploz_email(self) -> None:
        """Offer the e-PLOZ account's e-mail address on the next screen."""
        account = self.session.get(EplozAccount, self.attempt.eploz_account_id)
        self.attempt.email_prefill = (account.email or None) if account else None
