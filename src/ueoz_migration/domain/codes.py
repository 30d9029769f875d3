"""Event codes shown on the error screen and recorded with the attempt."""

from __future__ import annotations

from enum import IntEnum


class EventCode(IntEnum):
    """Why an attempt went to ``error``; the helpdesk reads these (docs/event-codes.md)."""

    NO_ACCOUNT = 201
    FIRST_NAME_DIFFERS = 202
    LAST_NAME_DIFFERS = 203
    SEVERAL_ACCOUNTS = 204
    ACCOUNT_BLOCKED = 205
    ALREADY_MIGRATED = 206
    DIRECTORY_UNAVAILABLE = 207
    BOTH_NAMES_DIFFER = 208

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS = {
    EventCode.NO_ACCOUNT: "no e-PLOZ account with this PESEL",
    EventCode.FIRST_NAME_DIFFERS: "account found, first name differs",
    EventCode.LAST_NAME_DIFFERS: "account found, last name differs",
    EventCode.SEVERAL_ACCOUNTS: "more than one e-PLOZ account with this PESEL",
    EventCode.ACCOUNT_BLOCKED: "the e-PLOZ account is blocked",
    EventCode.ALREADY_MIGRATED: ("the e-PLOZ account was already migrated to another UEOZ account"),
    EventCode.DIRECTORY_UNAVAILABLE: (
        "the e-PLOZ directory could not be searched (unavailable, retries exhausted)"
    ),
    EventCode.BOTH_NAMES_DIFFER: "account found, first and last name both differ",
}
