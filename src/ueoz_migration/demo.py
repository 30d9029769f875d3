"""Demo people: one for every branch of the search, loaded by ``ueoz-migration eploz seed-demo``.

Each entry is the identity the national login node sends for the person and the e-PLOZ
accounts the directory holds under their PESEL. The stand-in login node lists them on its
login page. Every PESEL here is valid and agrees with the date of birth.

Code 207 (the directory could not be searched) has no person: it comes from e-PLOZ being
unavailable past the worker's retries, not from any data. To see it, point the worker at a
directory that fails (the tests do) or stop the database the directory lives in.

The manual's Anna Mickiewicz-Sokołowska has PESEL 87042787635 there, which fails the checksum
and which a real node would never send; here she has a valid one for the same birth date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .adapters.eploz import ImportReport, checked_row, upsert_accounts
from .db.engine import transaction
from .db.models import EplozAccount, UeozAccount
from .domain.identity import Person
from .domain.privacy import pesel_hash


@dataclass(frozen=True)
class DemoPerson:
    """A demo identity, the branch it shows, and what the directory holds for it."""

    # A short handle (the stand-in node's page and tests pick people by it) and the branch.
    key: str
    scenario: str
    person: Person
    label: str
    eploz_rows: tuple[dict[str, str], ...] = ()
    # The login of an e-PLOZ account this person's verified UEOZ account already holds.
    ueoz_account_holds: str | None = None


def _row(login: str, pesel: str, first_name: str, last_name: str, **extra: str) -> dict[str, str]:
    return {
        "login": login,
        "pesel": pesel,
        "first_name": first_name,
        "last_name": last_name,
        "email": extra.get("email", f"{login}@demo.ueoz.example"),
        "status": extra.get("status", "active"),
        "roles": extra.get("roles", "P1:LEKARZ"),
    }


DEMO_PEOPLE: tuple[DemoPerson, ...] = (
    DemoPerson(
        "anna",
        "match",
        Person("Anna Maria", "Mickiewicz-Sokołowska", date(1987, 4, 27), "87042712342"),
        "znalezione — konto e-PLOZ odnalezione (osoba z instrukcji)",
        (
            _row(
                "amicsokol",
                "87042712342",
                "Anna",
                "MICKIEWICZ - SOKOLOWSKA",
                email="amicsokol@csioz.pl",
                roles="P1:LEKARZ;GABINET:ADMIN",
            ),
        ),
    ),
    DemoPerson(
        "no-email",
        "match_without_email",
        Person("Stanisław", "Łukasiewicz", date(1961, 2, 4), "61020409154"),
        "znalezione — konto e-PLOZ bez adresu e-mail",
        (_row("slukasiewicz", "61020409154", "STANISLAW", "LUKASIEWICZ", email=""),),
    ),
    DemoPerson(
        "newcomer",
        "match",
        Person("Julia Maria", "Zielińska", date(2004, 5, 17), "04251767804"),
        "znalezione — urodzona po 2000 r., konto e-PLOZ na pierwsze imię",
        (_row("jzielinska", "04251767804", "Julia", "ZIELINSKA"),),
    ),
    DemoPerson(
        "no-account",
        "no_account",
        Person("Jan", "Kowalski", date(1975, 3, 12), "75031205191"),
        "201 — brak konta e-PLOZ",
    ),
    DemoPerson(
        "first-name-differs",
        "first_name_differs",
        Person("Katarzyna", "Wiśniewska", date(1982, 9, 15), "82091503682"),
        "202 — inne imię",
        (_row("kwisniewska", "82091503682", "Kasia", "Wiśniewska"),),
    ),
    DemoPerson(
        "last-name-differs",
        "last_name_differs",
        Person("Ewa", "Nowak", date(1985, 2, 19), "85021907848"),
        "203 — inne nazwisko",
        (_row("ekaminska", "85021907848", "Ewa", "Kamińska"),),
    ),
    DemoPerson(
        "duplicate",
        "duplicate_pesel",
        Person("Tomasz", "Lewandowski", date(1990, 1, 1), "90010114419"),
        "204 — kilka kont e-PLOZ",
        (
            _row("tlewandowski", "90010114419", "Tomasz", "Lewandowski"),
            _row(
                "tlewandowski2", "90010114419", "Tomasz", "Lewandowski", roles="GABINET:REJESTRACJA"
            ),
        ),
    ),
    DemoPerson(
        "blocked",
        "blocked",
        Person("Andrzej", "Wójcik", date(1968, 7, 22), "68072202179"),
        "205 — konto e-PLOZ zablokowane",
        (_row("awojcik", "68072202179", "Andrzej", "Wójcik", status="blocked"),),
    ),
    DemoPerson(
        "migrated",
        "already_migrated",
        Person("Marek", "Kaczmarek", date(1979, 5, 30), "79053006233"),
        "206 — konto e-PLOZ już przeniesione do innego konta UEOZ",
        (_row("mkaczmarek", "79053006233", "Marek", "Kaczmarek"),),
    ),
    DemoPerson(
        "skipped",
        "already_in_ueoz",
        Person("Zofia", "Dąbrowska", date(1993, 6, 11), "93061113987"),
        "migracja pominięta — ma już konto UEOZ (to ono przejęło konto z 206)",
        ueoz_account_holds="mkaczmarek",
    ),
    DemoPerson(
        "hermegilda",
        "first_and_last_name_differ",
        Person("HERMEGILDA", "DLIGEMREH", date(1997, 4, 1), "97040117247"),
        "208 — oba dane różne (osoba z instrukcji)",
        (_row("hgrabowska", "97040117247", "Helena", "Grabowska"),),
    ),
)


@dataclass(frozen=True)
class SeedReport:
    eploz: ImportReport
    ueoz_added: int


def seed_demo(
    sessions: sessionmaker[Session], *, pesel_key: bytes, now: datetime | None = None
) -> SeedReport:
    """Put the demo people's e-PLOZ accounts and UEOZ accounts in place; safe to run again."""
    now = now or datetime.now(UTC)
    # Through the import's own checks, so the demo data is data the import would accept.
    rows = [checked_row(number, values) for number, values in enumerate(_all_rows(), start=1)]
    with transaction(sessions) as session:
        report = upsert_accounts(session, rows, now=now)
        added = sum(_ensure_ueoz_account(session, demo, pesel_key, now) for demo in DEMO_PEOPLE)
    return SeedReport(eploz=report, ueoz_added=added)


def _all_rows() -> list[dict[str, str]]:
    return [row for demo in DEMO_PEOPLE for row in demo.eploz_rows]


def _ensure_ueoz_account(
    session: Session, demo: DemoPerson, pesel_key: bytes, now: datetime
) -> int:
    """Give the person a verified UEOZ account holding that e-PLOZ account, unless they have one."""
    if demo.ueoz_account_holds is None:
        return 0
    person = demo.person
    key = pesel_hash(pesel_key, person.pesel)
    if session.scalar(select(UeozAccount.id).where(UeozAccount.pesel_hash == key)) is not None:
        return 0
    eploz = session.scalars(
        select(EplozAccount).where(EplozAccount.login == demo.ueoz_account_holds)
    ).one()
    session.add(
        UeozAccount(
            pesel=person.pesel,
            pesel_hash=key,
            given_names=person.given_names,
            family_name=person.family_name,
            login=eploz.login,
            email=eploz.email or f"{eploz.login}@demo.ueoz.example",
            email_verified_at=now,
            eploz_account_id=eploz.id,
            roles=eploz.roles,
            created_at=now,
        )
    )
    session.flush()
    return 1
