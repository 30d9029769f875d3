"""Event codes shown on the error screen and recorded with the attempt.

This module is the one source of what each code means and what the helpdesk should do about
it: ``helpdesk lookup`` prints it, and docs/event-codes.md's table repeats it word for word
(a test fails when the two disagree). The texts are Markdown, as the table holds them;
:func:`plain` gives them for a terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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

    @property
    def guidance(self) -> str:
        """What the helpdesk should do, as plain text."""
        return plain(GUIDE[self].helpdesk)


@dataclass(frozen=True)
class CodeGuide:
    """One row of docs/event-codes.md's table (Markdown): the code, for the helpdesk."""

    meaning: str
    person_sees: str
    helpdesk: str


GUIDE: dict[EventCode, CodeGuide] = {
    EventCode.NO_ACCOUNT: CodeGuide(
        "no e-PLOZ account with this PESEL",
        "the error screen; **Dalej** creates a new, empty UEOZ account",
        "Confirm the caller never had an e-PLOZ account under this PESEL (or had one under a "
        "different PESEL). If they had none, **Dalej** is the right way on. If they did, check "
        "the e-PLOZ record's PESEL; the account cannot be migrated until e-PLOZ is corrected.",
    ),
    EventCode.FIRST_NAME_DIFFERS: CodeGuide(
        "account found, first name differs",
        "the error screen",
        "Compare the first name in e-PLOZ with the name on the national node (the caller's "
        "ID). A typo or an outdated name in e-PLOZ must be corrected in e-PLOZ, then the caller "
        "chooses **Anuluj** on the error screen and logs in again, which searches anew; "
        "otherwise **Dalej** creates a new account without the e-PLOZ roles.",
    ),
    EventCode.LAST_NAME_DIFFERS: CodeGuide(
        "account found, last name differs",
        "the error screen",
        "As for 202, for the last name (a changed surname after marriage is the usual case).",
    ),
    EventCode.SEVERAL_ACCOUNTS: CodeGuide(
        "more than one e-PLOZ account with this PESEL",
        "the error screen",
        "The directory has duplicates: escalate to e-PLOZ administration to merge or delete "
        "the extra accounts (blocking one is not enough: it still counts), then the operators "
        "load the new export with `eploz import --full`, which removes them; the person then "
        "logs in again (after **Anuluj**). The migration can take over only one.",
    ),
    EventCode.ACCOUNT_BLOCKED: CodeGuide(
        "the e-PLOZ account is blocked",
        "the error screen",
        "A blocked account is not migrated. Find out why it was blocked (e-PLOZ "
        "administration); unblock it there if that is right, then the caller chooses "
        "**Anuluj** and logs in again.",
    ),
    EventCode.ALREADY_MIGRATED: CodeGuide(
        "the e-PLOZ account was already migrated to another UEOZ account",
        "the error screen",
        "The account's roles already belong to another UEOZ account: check which (by the "
        "e-PLOZ login) and whether the caller may be using a different PESEL or a shared "
        "login. Do not create duplicates; escalate.",
    ),
    EventCode.DIRECTORY_UNAVAILABLE: CodeGuide(
        "the e-PLOZ directory could not be searched (unavailable, retries exhausted)",
        "the error screen",
        "A temporary failure on our side, not the caller's: ask them to choose **Anuluj** and "
        "log in again later: a new attempt searches again. Report it if several callers give "
        "207.",
    ),
    EventCode.BOTH_NAMES_DIFFER: CodeGuide(
        "account found, first and last name both differ",
        "the error screen",
        "As for 202 and 203. Often the PESEL in e-PLOZ belongs to someone else: check with "
        "e-PLOZ administration.",
    ),
}

MEANINGS: dict[EventCode, str] = {code: guide.meaning for code, guide in GUIDE.items()}

_MARKUP = re.compile(r"\*\*|`")


def plain(markdown: str) -> str:
    """Drop the Markdown emphasis and code marks the guide uses: ``**Anuluj**`` → ``Anuluj``."""
    return _MARKUP.sub("", markdown)
