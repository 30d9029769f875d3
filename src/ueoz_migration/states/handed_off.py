"""``handed_off``: the person went back to their domain system, signed in (web/oidc.py)."""

from __future__ import annotations

from .base import StateBehaviour


class HandedOff(StateBehaviour):
    def record_hand_off(self, client: str) -> None:
        """Note which domain system received the person; the code and tokens stay out."""
        self.context.notes["client"] = client
