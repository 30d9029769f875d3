"""Keep personal data out of logs and out of the audit chain."""

from __future__ import annotations

import hashlib
import hmac

import idna


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


def domain_forms(email: str) -> tuple[str, str] | None:
    """Return an internationalised domain of the address in its Unicode and ASCII forms.

    ``("bücher.de", "xn--bcher-kva.de")``; None for a plain ASCII domain. Shown together,
    so that a look-alike (``аррӏе.com`` in Cyrillic letters) stands out as the punycode it is.
    """
    domain = email.rpartition("@")[2]
    if domain.isascii() and "xn--" not in domain.lower():
        return None
    try:
        return idna.decode(domain), idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def shown_email(email: str) -> str:
    """Mask the address for a page, with an internationalised domain in both forms.

    ``a***@csioz.pl``; ``a***@bücher.de (xn--bcher-kva.de)``.
    """
    forms = domain_forms(email)
    if forms is None:
        return mask_email(email)
    return f"{mask_email(email.rpartition('@')[0] + '@' + forms[0])} ({forms[1]})"


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
