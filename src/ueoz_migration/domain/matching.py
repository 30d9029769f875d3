"""Match the person the national login node identified with their e-PLOZ account."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .codes import EventCode

# NFKD splits most Polish letters into a base letter and a combining mark; ł/Ł has no
# decomposition, so it is mapped by hand.
_EXTRA_FOLDS = str.maketrans({"ł": "l", "Ł": "l", "đ": "d", "ø": "o", "ß": "ss"})
_SPACES = re.compile(r"\s+")
_SPACED_HYPHEN = re.compile(r"\s*-\s*")


def normalize_name(name: str) -> str:
    """Fold case and diacritics, collapse white space, drop spaces around hyphens."""
    folded = unicodedata.normalize("NFKD", name.translate(_EXTRA_FOLDS))
    letters = "".join(char for char in folded if not unicodedata.combining(char))
    collapsed = _SPACES.sub(" ", letters.casefold()).strip()
    return _SPACED_HYPHEN.sub("-", collapsed)


def first_name_agrees(eploz_first_name: str, given_names: str) -> bool:
    """The e-PLOZ first name agrees with all the given names or with the first of them."""
    expected = normalize_name(eploz_first_name)
    given = normalize_name(given_names)
    return expected in (given, given.split(" ")[0])


def last_name_agrees(eploz_last_name: str, family_name: str) -> bool:
    return normalize_name(eploz_last_name) == normalize_name(family_name)


class EplozCandidate(Protocol):
    """What matching needs to know of an e-PLOZ account."""

    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class MatchOutcome:
    """Either the e-PLOZ account that matched, or the event code saying why none did."""

    account: EplozCandidate | None
    code: EventCode | None


def match_account(
    candidates: Sequence[EplozCandidate],
    given_names: str,
    family_name: str,
    *,
    migrated_elsewhere: bool = False,
) -> MatchOutcome:
    """Decide the search's outcome from the e-PLOZ accounts found under the person's PESEL.

    The checks run in the order of docs/event-codes.md: existence (201, 204), the account's
    standing (205, 206), then the names (208, 202, 203). ``migrated_elsewhere`` says whether
    the single candidate already belongs to another UEOZ account.
    """
    if not candidates:
        return MatchOutcome(None, EventCode.NO_ACCOUNT)
    if len(candidates) > 1:
        return MatchOutcome(None, EventCode.SEVERAL_ACCOUNTS)
    (account,) = candidates
    if account.status == "blocked":
        return MatchOutcome(None, EventCode.ACCOUNT_BLOCKED)
    if migrated_elsewhere:
        return MatchOutcome(None, EventCode.ALREADY_MIGRATED)
    first_ok = first_name_agrees(account.first_name, given_names)
    last_ok = last_name_agrees(account.last_name, family_name)
    if not first_ok and not last_ok:
        return MatchOutcome(None, EventCode.BOTH_NAMES_DIFFER)
    if not first_ok:
        return MatchOutcome(None, EventCode.FIRST_NAME_DIFFERS)
    if not last_ok:
        return MatchOutcome(None, EventCode.LAST_NAME_DIFFERS)
    return MatchOutcome(account, None)
