"""The states that end the attempt: ``done``, ``cancelled``, ``expired``, ``skipped``."""

from __future__ import annotations

from .base import StateBehaviour


class Finals(StateBehaviour):
    def close_attempt(self) -> None:
        """Free the PESEL for a later attempt and stop the worker's interest in this one."""
        self.attempt.open_pesel_key = None
        self.attempt.search_lease_until = None
        self.attempt.search_due_at = None
