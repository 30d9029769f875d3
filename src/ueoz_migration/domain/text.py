"""Text from outside (the login node, the e-PLOZ export): the characters no field may hold."""

from __future__ import annotations

import unicodedata

# By Unicode category: every control character (Cc: C0, DEL and C1, such as NUL, a tab or
# NEL), the line and paragraph separators (Zl, Zp) and the invisible format characters (Cf:
# a zero-width space, a soft hyphen, a byte order mark, bidi marks). None belongs in a name,
# a login or an address; a name holding one never agrees with another source's (codes
# 202/203 for nothing), and PostgreSQL refuses a NUL outright. A space, a no-break space,
# Polish letters and hyphens are ordinary characters.
_FORBIDDEN = {
    "Cc": "a control character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cf": "an invisible format character",
}


def forbidden_characters(value: str) -> str | None:
    """Say which forbidden characters ``value`` holds (``contains …``), or None.

    They are named by code point (U+200B), never shown with the value around them: it may be
    a person's name or address.
    """
    if value.isprintable():  # the usual field, at C speed (every forbidden character fails it)
        return None
    found: dict[str, list[str]] = {}
    for char in dict.fromkeys(value):
        kind = _FORBIDDEN.get(unicodedata.category(char))
        if kind:
            found.setdefault(kind, []).append(f"U+{ord(char):04X}")
    if not found:
        return None  # a no-break space or another unprintable but ordinary character
    named = [
        f"{kind} ({', '.join([*codes[:3], '…'] if len(codes) > 3 else codes)})"
        for kind, codes in found.items()
    ]
    return "contains " + " and ".join(named)
