"""Who fires each event of the migration flow, in this release.

The flow file names the events; the parts of the service fire them by name. A flow version can
run here only if every event it names is fired by some part of this release
(:func:`ueoz_migration.journey.check_runnable`): an event renamed in the flow file while
attempts of the older version are still open would otherwise leave those attempts waiting for
an event that never comes.
"""

from __future__ import annotations

from collections.abc import Mapping

PAGES = "the pages' buttons"

FIRED_BY: Mapping[str, str] = {
    "create_account": PAGES,
    "continue_new": PAGES,
    "submit": PAGES,
    "cancel": PAGES,
    "resend": PAGES,
    "change_email": PAGES,
    "verify": "the verification link",
    "account_found": "the search worker",
    "search_failed": "the search worker",
    "skip": "the login (a person already migrated)",
    "expire": "the expiry sweep",
    "hand_off": "the sign-in provider (Przejdź do systemu dziedzinowego)",
}

#: The events a person may fire from a page; the worker's and the system's are not among them.
USER_EVENTS = frozenset(event for event, by in FIRED_BY.items() if by == PAGES)
