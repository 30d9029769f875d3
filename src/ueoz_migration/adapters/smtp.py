"""Send e-mail over SMTP: one connection a message, the server's refusals said by their codes.

Which refusals are tried again and what ``last_error`` keeps of them: docs/operations.md,
"Search worker and mail sender".
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import parseaddr

from email_validator import EmailNotValidError, validate_email

from ..config import Settings
from .mail_transport import DeliveryError

# RFC 3463's enhanced status code, which a server that offers ENHANCEDSTATUSCODES puts first
# in the text of its reply: class.subject.detail, digits only.
_ENHANCED_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})(?!\S)")


class SmtpTransport:
    """Send over SMTP, one connection per message (the outbox is low-volume).

    Only a 5xx refusal of the recipient or of the message is final (``permanent``). A refused
    login or sender address is a setting to fix, which hits every message alike: retried, so
    that nothing is lost meanwhile. Domains go in ASCII (:func:`smtp_address`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        ca_file: str = "",
        timeout: float = 10.0,
        data_timeout: float = 120.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.starttls, self.timeout, self.data_timeout = starttls, timeout, data_timeout
        # The server's certificate is always verified: against the system's authorities, or
        # against ``ca_file`` alone (a relay inside the ministry, with a private authority).
        self.tls = ssl.create_default_context(cafile=ca_file or None)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            ca_file=settings.smtp_ca_file,
            timeout=settings.smtp_timeout.total_seconds(),
            data_timeout=settings.smtp_data_timeout.total_seconds(),
        )

    def deliver(self, message: EmailMessage) -> None:
        sender = smtp_address(parseaddr(str(message["From"]))[1])
        recipient = smtp_address(str(message["To"]))  # the outbox writes the bare address
        message.replace_header("To", recipient)
        try:
            with _Connection(self.host, self.port, self.timeout, self.data_timeout) as smtp:
                if self.starttls:
                    self._start_tls(smtp)
                if self.username:
                    self._log_in(smtp)
                if not (sender + recipient).isascii():
                    self._check_smtputf8(smtp, recipient)
                smtp.send_message(message, sender, [recipient])
        except smtplib.SMTPRecipientsRefused as error:
            # One recipient per message, so "all refused" is this message's recipient.
            code, text = next(iter(error.recipients.values()))
            raise DeliveryError(
                _refusal("recipient refused", code, text), permanent=500 <= code < 600
            ) from None
        except smtplib.SMTPResponseException as error:
            code, what = error.smtp_code, _REFUSALS.get(type(error), "server said")
            permanent = isinstance(error, smtplib.SMTPDataError) and 500 <= code < 600
            raise DeliveryError(
                _refusal(what, code, error.smtp_error), permanent=permanent
            ) from None
        except smtplib.SMTPNotSupportedError as error:
            # smtplib's own words (no address in them): an extension this delivery needs.
            raise DeliveryError(f"server lacks what the delivery needs: {error}") from None
        except ssl.SSLError as error:
            # A certificate that does not verify, or a failed handshake: said by class only.
            raise DeliveryError(f"TLS with the server failed: {type(error).__name__}") from None
        except (smtplib.SMTPException, OSError) as error:
            # Refused or reset connections, timeouts, a server that hangs up.
            raise DeliveryError(f"server unreachable: {type(error).__name__}") from None

    def _start_tls(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.starttls(context=self.tls)
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError("server offers no STARTTLS: nothing sent in clear") from None

    def _log_in(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.login(self.username, self.password)
        except smtplib.SMTPNotSupportedError:
            # Many servers offer AUTH only once the connection is encrypted.
            raise DeliveryError(
                "server offers no login (AUTH) here: check SMTP_USERNAME and SMTP_STARTTLS"
            ) from None

    @staticmethod
    def _check_smtputf8(smtp: smtplib.SMTP, recipient: str) -> None:
        """Refuse an address only SMTPUTF8 can carry when the server does not offer it.

        The domain is ASCII by now (:func:`smtp_address`), so only a local part in another
        script (``żółw@…``) is left: the server cannot take this recipient, now or later.
        Our own sender address the same way is a setting to fix, retried like a refused login.
        """
        smtp.ehlo_or_helo_if_needed()
        if smtp.has_extn("smtputf8"):
            return
        if not recipient.isascii():
            raise DeliveryError(
                "recipient's address has a non-ASCII local part, which needs SMTPUTF8, "
                "and the server does not offer it",
                permanent=True,
            )
        raise DeliveryError(
            "MAIL_FROM has a non-ASCII local part, which needs SMTPUTF8, "
            "and the server does not offer it"
        )


class _Connection(smtplib.SMTP):
    """smtplib's client, waiting longer for the server's verdict on the message itself.

    After the end of the message (``<CRLF>.<CRLF>``) a server may take its time: it stores
    the message, scans it, hands it on. Giving up then does not take the message back: the
    server may well deliver it, while we count a failed try and send it again later, so the
    person gets two copies or more. RFC 5321 (§4.5.3.2.6) suggests a client waits 10 minutes
    for that reply; ``data_timeout`` (``SMTP_DATA_TIMEOUT_SECONDS``) is the wait, and every
    other reply keeps ``timeout``.
    """

    def __init__(self, host: str, port: int, timeout: float, data_timeout: float) -> None:
        self.data_timeout = data_timeout
        self._message_follows = False
        super().__init__(host, port, timeout=timeout)

    def getreply(self) -> tuple[int, bytes]:
        # 354 answers DATA alone (RFC 5321 §4.2.2), and the reply after it is the verdict on
        # the message; smtplib reads both through here.
        verdict, self._message_follows = self._message_follows, False
        if verdict and self.sock is not None:
            self.sock.settimeout(self.data_timeout)
        try:
            code, text = super().getreply()
        finally:
            if verdict and self.sock is not None:
                self.sock.settimeout(self.timeout)
        self._message_follows = code == 354
        return code, text

    def __exit__(self, *exc_info: object) -> None:
        # QUIT comes after the server's verdict: however it answers (or fails to), the message
        # is accepted or refused already, and an error here must not make it a failed try.
        try:
            super().__exit__(*exc_info)
        except (smtplib.SMTPException, OSError):
            self.close()


def smtp_address(address: str) -> str:
    """Return the address with its domain in ASCII (IDNA, ``xn--…``) where that is enough.

    The outbox keeps addresses as email_validator normalised them, with the domain in its
    Unicode form (``anna@żółw.pl``). Said so to an SMTP server, it needs the SMTPUTF8
    extension, which many relays lack, and the mail would never go; the ASCII form of the
    domain reaches the same mailbox through any server. A local part in another script has
    no ASCII form: such an address is returned as it is, and needs SMTPUTF8.
    """
    if address.isascii():
        return address
    try:
        ascii_form = validate_email(address, check_deliverability=False).ascii_email
    except EmailNotValidError:
        return address  # not for us to judge here; the server will say
    return ascii_form or address


_REFUSALS = {
    smtplib.SMTPDataError: "message refused",
    smtplib.SMTPSenderRefused: "sender refused",
    smtplib.SMTPAuthenticationError: "login refused",
}


def _refusal(what: str, code: int, text: bytes | str) -> str:
    """Say what the server refused, with its reply code and enhanced status code only.

    ``recipient refused: 550 5.1.1``. The reply's text is left out whole: servers quote the
    address in it, or only its local part, URL-encoded or not, and at times the mailbox
    owner's full name, in forms no masking can be sure to catch. The codes say what an
    operator needs (RFC 3463: 5.1.1 no such mailbox, 4.2.2 mailbox full, 5.7.1 refused by
    policy, …); the server's own log has the rest, for the time of the try.
    """
    if not 200 <= code < 600:  # smtplib's -1: a reply that did not start with a code
        return f"{what}: a reply without a valid code"
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    enhanced = _ENHANCED_STATUS.match(text)
    return f"{what}: {code} {enhanced.group(1)}" if enhanced else f"{what}: {code}"
