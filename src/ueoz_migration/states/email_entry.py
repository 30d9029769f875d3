"""``email_entry``: the person gives the address of their new UEOZ account."""

from __future__ import annotations

import functools
import string

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import LOCAL_PART_MAX_LENGTH
from sqlalchemy import bindparam, select

from ..db.models import UeozAccount
from ..domain.privacy import mask_email_for_audit
from .base import Rejected, StateBehaviour


# A submit checks its two addresses, saves one and counts links to it: four calls, with the
# same one or two values, in one transaction. The validator is the costly part.
@functools.lru_cache(maxsize=64)
def normalized_email(value: str | None) -> str | None:
    """Return the address in its normal form, or None when it is not a valid address."""
    try:
        return validate_email((value or "").strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        return None


# Only the ASCII letters: str.casefold() also folds "ß" into "ss" and "ς" into "σ", which
# would make two different mailboxes one address.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

# Built once (see journey.py, where the transition's own statements are).
PERSONS_UEOZ_ACCOUNT = select(UeozAccount).where(UeozAccount.pesel_hash == bindparam("pesel_hash"))


def _same_address(repeated: str | None, address: str) -> bool:
    """Whether the repeated address is the address, whatever the case of its ASCII letters.

    Mail systems treat addresses without regard to case (RFC 5321 allows a local part's case to
    matter, but no mailbox provider makes it); a person who types ``Julia@`` once and ``julia@``
    the second time has typed one address. The account keeps the address as given first.
    """
    return repeated is not None and (
        repeated.translate(_ASCII_LOWER) == address.translate(_ASCII_LOWER)
    )


class EmailEntry(StateBehaviour):
    def check_submission(
        self,
        email: str | None = None,
        email_repeat: str | None = None,
        terms_accepted: bool = False,
    ) -> None:
        """Refuse the form unless both fields hold one valid address and the terms are accepted."""
        errors = {}
        address = normalized_email(email)
        if not (email or "").strip():
            errors["email"] = "required"
        elif address is None:
            errors["email"] = "invalid"
        elif len(address.rpartition("@")[0]) > LOCAL_PART_MAX_LENGTH:
            # RFC 5321's limit, which email_validator checks only in its strict mode: mail
            # servers may refuse such an address, and the link would never arrive.
            errors["email"] = "local_part_too_long"
        if not (email_repeat or "").strip():
            errors["email_repeat"] = "required"
        elif address is not None and not _same_address(normalized_email(email_repeat), address):
            errors["email_repeat"] = "mismatch"
        if not terms_accepted:
            errors["terms_accepted"] = "required"
        if errors:
            raise Rejected("invalid_submission", errors)

    def save_ueoz_account(self, email: str) -> None:
        """Create the UEOZ account, unverified, or update the one an earlier attempt left."""
        address = normalized_email(email)
        assert address is not None  # check_submission ran first
        attempt = self.attempt
        # The account the search found, days ago perhaps: its login and roles pass to UEOZ only
        # if it still matches the person now.
        eploz = (
            self.matched_eploz_account(attempt.eploz_account_id, changed="eploz_changed")
            if attempt.eploz_account_id
            else None
        )
        account = self.session.scalars(
            PERSONS_UEOZ_ACCOUNT, {"pesel_hash": attempt.pesel_hash}
        ).one_or_none()
        if account is not None and account.email_verified_at is not None:
            raise Rejected("already_migrated")
        if account is None:
            account = UeozAccount(pesel_hash=attempt.pesel_hash, created_at=self.context.now)
            self.session.add(account)
        account.pesel = attempt.pesel
        account.given_names = attempt.given_names
        account.family_name = attempt.family_name
        account.email = address
        account.login = eploz.login if eploz else None
        account.roles = eploz.roles if eploz else ""
        account.eploz_account_id = eploz.id if eploz else None
        self.session.flush()  # an e-PLOZ account already held by a UEOZ account fails here
        attempt.ueoz_account_id = account.id
        attempt.email = address
        self.context.notes["email"] = mask_email_for_audit(address)
