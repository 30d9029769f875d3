"""The demo people the stand-in node can log in, one per branch of the journey.

The e-PLOZ demo data is built from the same list, so that each person reaches the
branch named in `scenario` (the event code, where there is one, in brackets).
Every PESEL is valid and agrees with the date of birth.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoIdentity:
    """One person as the node would describe them."""

    key: str
    first_name: str
    last_name: str
    pesel: str
    date_of_birth: dt.date
    scenario: str
    description: str


DEMO_IDENTITIES: tuple[DemoIdentity, ...] = (
    DemoIdentity(
        "anna",
        "Anna",
        "Mickiewicz-Sokołowska",
        # The manual's 87042787635 fails the PESEL checksum; same birth date, valid.
        "87042787645",
        dt.date(1987, 4, 27),
        "match",
        "z instrukcji: konto e-PLOZ odnalezione, migracja przebiega bez przeszkód",
    ),
    DemoIdentity(
        "hermegilda",
        "HERMEGILDA",
        "DLIGEMREH",
        "97040117247",
        dt.date(1997, 4, 1),
        "first_and_last_name_differ",
        "z instrukcji: imię i nazwisko w e-PLOZ inne niż w węźle (208)",
    ),
    DemoIdentity(
        "blocked",
        "Jan",
        "Kowalski",
        "80011512354",
        dt.date(1980, 1, 15),
        "blocked",
        "konto e-PLOZ zablokowane (205)",
    ),
    DemoIdentity(
        "no-account",
        "Zofia",
        "Nowak",
        "92110345687",
        dt.date(1992, 11, 3),
        "no_account",
        "brak konta e-PLOZ z tym numerem PESEL (201)",
    ),
    DemoIdentity(
        "migrated",
        "Piotr",
        "Wiśniewski",
        "75063078918",
        dt.date(1975, 6, 30),
        "already_migrated",
        "konto e-PLOZ już przeniesione do innego konta UEOZ (206)",
    ),
    DemoIdentity(
        "duplicate",
        "Katarzyna",
        "Wójcik",
        "88022923468",
        dt.date(1988, 2, 29),
        "duplicate_pesel",
        "więcej niż jedno konto e-PLOZ z tym numerem PESEL (204)",
    ),
    DemoIdentity(
        "first-name-differs",
        "Tomasz",
        "Kamiński",
        "69090934576",
        dt.date(1969, 9, 9),
        "first_name_differs",
        "imię w e-PLOZ inne niż w węźle (202)",
    ),
    DemoIdentity(
        "last-name-differs",
        "Małgorzata",
        "Lewandowska",
        "83121256729",
        dt.date(1983, 12, 12),
        "last_name_differs",
        "nazwisko w e-PLOZ inne niż w węźle (203)",
    ),
    DemoIdentity(
        "newcomer",
        "Julia Maria",
        "Zielińska",
        "04251767804",
        dt.date(2004, 5, 17),
        "match",
        "urodzona po 2000 r., dwa imiona; konto e-PLOZ na pierwsze imię",
    ),
)


def demo_identity(key: str) -> DemoIdentity:
    """Return the demo person with this key."""
    for identity in DEMO_IDENTITIES:
        if identity.key == key:
            return identity
    raise KeyError(key)
