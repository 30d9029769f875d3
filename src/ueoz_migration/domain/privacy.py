"""Keep personal data out of logs and out of the audit chain."""

from __future__ import annotations

import hashlib
import hmac


def pesel_hash(key: bytes, pesel: str) -> str:
    """Return the keyed hash that stands for a PESEL wherever the PESEL itself must not."""
    return hmac.new(key, pesel.encode("ascii"), hashlib.sha256).hexdigest()


def mask_pesel(pesel: str) -> str:
    """Show only the last three digits, as the helpdesk asks for them: ``********247``."""
    return "*" * (len(pesel) - 3) + pesel[-3:]


def mask_email(email: str) -> str:
    """Show the first letter and the domain: ``a***@csioz.pl``."""
    local, _, domain = email.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_email_for_audit(email: str) -> str:
    """Keep less than the pages and logs do, for the long-kept audit chain: ``a***@c***.pl``.

    The domain of a personal address (``@kowalski.pl``) names its owner; of the domain only
    its first letter and its top-level label stay, enough to tell two addresses apart in a
    person's history (a correction from ``a***@g***.com`` to ``a***@o***.pl``).
    """
    local, _, domain = email.partition("@")
    if not domain:
        return "***"
    top = domain.rsplit(".", 1)[1] if "." in domain else ""
    return f"{local[:1]}***@{domain[:1]}***" + (f".{top}" if top else "")
