"""``awaiting_verification``: the account exists; a link in an e-mail confirms the address."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update

from ..db.models import (
    LINK_MAIL,
    OUTBOX_UNSENT,
    Attempt,
    OutboxMessage,
    UeozAccount,
    VerificationLink,
)
from ..domain.language import LANGUAGES
from ..domain.privacy import mask_email_for_audit
from .base import Rejected, StateBehaviour
from .email_entry import normalized_email

#: Why a verification e-mail still in the outbox was withdrawn, by the event that retired its
#: link; the outbox row's ``last_error`` reads ``withdrawn: <this>``.
WITHDRAWN_BECAUSE = {
    "submit": "a newer link was sent",
    "resend": "a newer link was sent",
    "change_email": "the address was changed",
    "expire": "the attempt expired",
    "verify": "the address was verified",
}


# Built once (see journey.py, where the transition's own statements are).
RETIRE_LIVE_LINKS = (
    update(VerificationLink)
    .where(VerificationLink.attempt_id == bindparam("attempt"))
    .where(VerificationLink.used_at.is_(None))
    .where(VerificationLink.retired_at.is_(None))
    .values(retired_at=bindparam("now"))
)
WITHDRAW_WAITING_LINK_MAIL = (
    update(OutboxMessage)
    .where(OutboxMessage.attempt_id == bindparam("attempt"))
    .where(OutboxMessage.kind == LINK_MAIL)
    .where(OUTBOX_UNSENT)
    # Emptied as a sent one is: the dead link and the person's name need not stay.
    .values(withdrawn_at=bindparam("now"), last_error=bindparam("why"), body="")
)
ADDRESSES_OF_LINKS_SINCE = (
    select(VerificationLink.email)
    .join(Attempt, Attempt.id == VerificationLink.attempt_id)
    .where(Attempt.pesel_hash == bindparam("pesel_hash"))
    .where(VerificationLink.created_at > bindparam("since"))
)
ATTEMPTS_LINK = (
    select(VerificationLink)
    .where(VerificationLink.token_hash == bindparam("token_hash"))
    .where(VerificationLink.attempt_id == bindparam("attempt_id"))
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def link_refusal(link: VerificationLink | None, attempt: Attempt, now: datetime) -> str | None:
    """Why ``verify`` with this link would be turned down in ``awaiting_verification``, or
    None: the step's check, and the link's page before anything is fired (web/verification)."""
    if link is None:
        return "link_unknown"
    if link.used_at is not None:
        return "link_used"
    if link.retired_at is not None or link.email != attempt.email:
        return "link_retired"
    if link.expires_at <= now:
        return "link_expired"
    return None


class AwaitingVerification(StateBehaviour):
    def send_verification_link(self, language: str | None = None, event: str = "") -> None:
        """Retire earlier links, make a new one and put the e-mail carrying it in the outbox.

        ``language``: the pages' language when the person asked, which the e-mail (and any
        later one) is then written in.
        """
        # First, before the new e-mail is in the session: retiring withdraws the attempt's
        # e-mails still waiting in the outbox, and the new one must not be among them.
        self.retire_verification_links(event)
        now, attempt = self.context.now, self.attempt
        if language in LANGUAGES:
            attempt.language = language
        assert attempt.email is not None
        token = secrets.token_urlsafe(32)
        expires_at = now + self.context.policy.verification_link_ttl
        self.session.add(
            VerificationLink(
                attempt_id=attempt.id,
                token_hash=token_hash(token),
                email=attempt.email,
                created_at=now,
                expires_at=expires_at,
            )
        )
        link = f"{self.context.policy.base_url}/weryfikacja/{token}"
        subject, body = self.context.mail.verification(
            attempt=attempt, link=link, expires_at=expires_at
        )
        self.session.add(
            OutboxMessage(
                attempt_id=attempt.id,
                kind=LINK_MAIL,
                recipient=attempt.email,
                subject=subject,
                body=body,
                created_at=now,
                due_at=now,
            )
        )
        self.context.notes["email"] = mask_email_for_audit(attempt.email)

    def check_resend_allowed(self, email: str | None = None, token: str | None = None) -> None:
        """Allow only so many links an hour, so that no mailbox can be flooded from here.

        A resend asked for from a link's page (``token``) is allowed only while that link's
        address is the attempt's: a link to an address since changed belongs to someone the
        person no longer means, who may neither mail them nor retire their live link.

        Whichever way a link is asked for: a resend to the attempt's address, or an address
        given on the form (``submit`` checks this too, or changing the address and giving
        the same one again would get round the limit). The limit holds per address, letter
        case aside (``Anna@`` and ``anna@`` reach one mailbox), so that a person who asked
        for links to a mistyped address can still correct it; and twice the limit holds
        for the attempt as a whole, so that new addresses cannot be tried without end. Both
        count the person's links, whatever attempt sent them: cancelling and logging in again
        starts no new count.
        """
        if token is not None:
            link = self._link(token)
            if link is None or link.email != self.attempt.email:
                raise Rejected("link_retired")
        address = (self.attempt.email if email is None else normalized_email(email)) or ""
        since = self.context.now - timedelta(hours=1)
        # The hour's addresses (at most twice the limit of them) compared here, not in SQL:
        # SQLite's lower() and PostgreSQL's under the C collation fold ASCII letters only.
        sent = self.session.scalars(
            ADDRESSES_OF_LINKS_SINCE, {"pesel_hash": self.attempt.pesel_hash, "since": since}
        ).all()
        to_this = sum(each.casefold() == address.casefold() for each in sent)
        limit = self.context.policy.resend_limit_per_hour
        if to_this >= limit or len(sent) >= 2 * limit:
            raise Rejected("resend_limit")

    def check_verification_link(self, token: str = "") -> None:
        """Accept only this attempt's newest link, unused, unexpired, for the current address."""
        reason = link_refusal(self._link(token), self.attempt, self.context.now)
        if reason is not None:
            raise Rejected(reason)

    def confirm_email(self, token: str = "") -> None:
        """Use up the link and mark the UEOZ account's address as verified."""
        link = self._link(token)
        assert link is not None
        link.used_at = self.context.now
        account = self.session.get(UeozAccount, self.attempt.ueoz_account_id)
        assert account is not None
        account.email_verified_at = self.context.now
        # A copy of the link's e-mail may still wait (delivered, but the sender died before
        # it recorded so): it would only bring a used link now.
        self._withdraw_waiting_mail("verify")

    def retire_verification_links(self, event: str = "") -> None:
        """Kill every live link of this attempt, and withdraw the e-mails carrying them.

        The address changed, a newer link goes, or the attempt expired (``event`` says
        which). An e-mail the outbox has not sent yet would bring a dead link, with the
        person's full name, to an address they may have given by mistake; and an older
        e-mail retried after an outage could arrive after the newer one.
        """
        # Plain UPDATEs on the transaction's connection: no link or outbox row of the
        # attempt is loaded in the session when a step retires them, so there is nothing
        # to keep in step.
        self.session.connection().execute(
            RETIRE_LIVE_LINKS, {"attempt": self.attempt.id, "now": self.context.now}
        )
        self._withdraw_waiting_mail(event)

    def _withdraw_waiting_mail(self, event: str) -> None:
        """Take back the attempt's verification e-mails that are neither sent nor failed.

        In this transition's transaction, so they are withdrawn exactly when it commits. A
        sender that already holds one and is handing it to the SMTP server right now cannot
        be stopped: that copy may still go out (the row then shows both ``withdrawn_at`` and
        ``sent_at``). Any other sender skips a withdrawn message, whether it comes due
        later or sits unsent in a batch claimed before.
        """
        reason = WITHDRAWN_BECAUSE.get(event, f"its link was retired ({event or 'no event'})")
        self.session.connection().execute(
            WITHDRAW_WAITING_LINK_MAIL,
            {
                "attempt": self.attempt.id,
                "now": self.context.now,
                "why": f"withdrawn: {reason}",
            },
        )

    def _link(self, token: str) -> VerificationLink | None:
        return self.session.scalars(
            ATTEMPTS_LINK, {"token_hash": token_hash(token), "attempt_id": self.attempt.id}
        ).one_or_none()
