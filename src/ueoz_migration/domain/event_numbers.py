"""Event numbers: what a person reads off the error screen and gives the helpdesk.

An event number is ``MIGRATION_`` and 12 digits (``MIGRATION_000000000042``). The digits are
the key of a row of ``event_numbers``, which never hands out a value twice
(:meth:`~ueoz_migration.states.error.Error.mint_event_number`); this module is the one
place that knows how the number is written.
"""

from __future__ import annotations

import re

PREFIX = "MIGRATION_"
DIGITS = 12

_EVENT_NUMBER = re.compile(rf"{PREFIX}\d{{{DIGITS}}}")


def format_event_number(key: int) -> str:
    """Write the event number of ``key``, a row of ``event_numbers``: ``MIGRATION_000000000042``."""
    return f"{PREFIX}{key:0{DIGITS}d}"


#: What a malformed number is told. It never quotes what was typed: a PESEL typed where the
#: number belongs would be echoed whole.
NOT_AN_EVENT_NUMBER = (
    f"not an event number ({PREFIX} and {DIGITS} digits, e.g. {format_event_number(42)})"
)


class NotAnEventNumber(ValueError):
    """The text is not an event number, however it is spaced or cased."""

    def __init__(self) -> None:
        super().__init__(NOT_AN_EVENT_NUMBER)


def is_event_number(text: str) -> bool:
    """Whether ``text`` is an event number exactly as the service writes it."""
    return _EVENT_NUMBER.fullmatch(text) is not None


def normalize_event_number(text: str) -> str:
    """Return the number as a caller may dictate it (any case, spaces) in its written form.

    Raise :class:`NotAnEventNumber` when it is not one.
    """
    number = re.sub(r"\s+", "", text).upper()
    if not is_event_number(number):
        raise NotAnEventNumber
    return number
