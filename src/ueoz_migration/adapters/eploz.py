"""The e-PLOZ directory: where the search looks accounts up, and how its export is loaded.

e-PLOZ is the legacy platform; the service only reads it. The search worker sees it through
:class:`Directory`, so that a later adapter can ask the live e-PLOZ instead of the table that
:class:`TableDirectory` reads. The table is filled from e-PLOZ's CSV export by
:func:`read_export` (every bad line named, nothing kept) and :func:`import_accounts` (one
transaction, an upsert keyed by login, so importing the same file twice changes nothing).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError
from stdnum.pl import pesel as pesel_number

from ..db.engine import snapshot, transaction
from ..db.models import EplozAccount, UeozAccount

COLUMNS = ("login", "pesel", "first_name", "last_name", "email", "status", "roles")
STATUSES = ("active", "blocked")
_GRANT = re.compile(r"[^:;\s]+:[^:;\s]+")
_LIMITS = {"login": 200, "first_name": 200, "last_name": 200, "email": 320}
# C0 controls and DEL: nothing in an account has them, and PostgreSQL refuses a NUL outright.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHUNK = 1000  # logins per IN (…) when comparing a large export with the table


class DirectoryUnavailable(RuntimeError):
    """e-PLOZ could not be asked; the search is retried later."""


@dataclass(frozen=True)
class EplozAccountView:
    """An e-PLOZ account as the search sees it."""

    id: int
    login: str
    first_name: str
    last_name: str
    email: str
    status: str
    roles: tuple[str, ...]

    @property
    def blocked(self) -> bool:
        return self.status == "blocked"


class Directory(Protocol):
    """Where the search worker looks e-PLOZ accounts up."""

    def accounts_by_pesel(self, pesel: str) -> list[EplozAccountView]:
        """Return every e-PLOZ account registered under this PESEL (none, one or several)."""

    def is_migrated_elsewhere(self, account_id: int, pesel_hash: str) -> bool:
        """Say whether a UEOZ account of another person already holds this e-PLOZ account."""


class TableDirectory:
    """The directory as the ``eploz_accounts`` table, loaded by ``eploz import``."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # Both look-ups are reads from a snapshot (db.engine.snapshot): on SQLite a plain session
    # would begin with BEGIN IMMEDIATE and queue for the write lock behind any long write (an
    # import), until the search timed out and counted as a failed try of the directory.
    def accounts_by_pesel(self, pesel: str) -> list[EplozAccountView]:
        with snapshot(self.sessions) as session:
            rows = session.scalars(
                select(EplozAccount).where(EplozAccount.pesel == pesel).order_by(EplozAccount.id)
            ).all()
        return [_view(row) for row in rows]

    def is_migrated_elsewhere(self, account_id: int, pesel_hash: str) -> bool:
        # The person's own UEOZ account (left unverified by an earlier, expired attempt) has
        # the same PESEL hash and is not "elsewhere": they may finish the migration.
        with snapshot(self.sessions) as session:
            holder = session.scalar(
                select(UeozAccount.id)
                .where(UeozAccount.eploz_account_id == account_id)
                .where(UeozAccount.pesel_hash != pesel_hash)
            )
        return holder is not None


def _view(row: EplozAccount) -> EplozAccountView:
    return EplozAccountView(
        id=row.id,
        login=row.login,
        first_name=row.first_name,
        last_name=row.last_name,
        email=row.email,
        status=row.status,
        roles=tuple(filter(None, row.roles.split(";"))),
    )


# -- the export ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EplozRow:
    """One valid line of the export, in the form the table stores."""

    line: int
    login: str
    pesel: str
    first_name: str
    last_name: str
    email: str
    status: str
    roles: str

    def values(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in COLUMNS}


@dataclass(frozen=True)
class Problem:
    """Why one line of the export was refused; never quotes a PESEL or an e-mail address."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


class ExportRejected(ValueError):
    """The export has bad lines; nothing of it was imported."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = len({problem.line for problem in self.problems})
        super().__init__(f"{lines} bad line{'s' if lines != 1 else ''}")


@dataclass(frozen=True)
class ImportReport:
    """What an import did to the directory."""

    added: int
    updated: int
    unchanged: int
    not_in_file: int  # accounts the table holds that this export no longer lists (kept)

    @property
    def rows(self) -> int:
        return self.added + self.updated + self.unchanged


def read_export(data: bytes) -> list[EplozRow]:
    """Parse and check an export file; raise :class:`ExportRejected` naming every bad line."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise ExportRejected([Problem(1, None, f"not a CSV header ({error})")]) from error
    if header is None:
        raise ExportRejected([Problem(1, None, "the file is empty; expected a header row")])
    columns = [name.strip() for name in header]
    _check_header(columns)

    rows: list[EplozRow] = []
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problems.append(Problem(reader.line_num, None, f"not valid CSV ({error})"))
            break  # the reader cannot find the next line's start reliably after this
        line = reader.line_num
        if not any(field.strip() for field in fields):
            continue  # blank lines, typically at the end of the file
        row, row_problems = _check_row(start, fields, header=columns)
        if row is not None and row.login:
            if row.login in first_line_of:
                earlier = first_line_of[row.login]
                row_problems.append(Problem(start, "login", f"the same login as line {earlier}"))
            else:
                first_line_of[row.login] = start
        problems.extend(row_problems)
        if row is not None and not row_problems:
            rows.append(row)
    if problems:
        raise ExportRejected(problems)
    return rows


def _decode(data: bytes) -> str:
    """Decode UTF-8 (with or without a byte order mark), naming every line that is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    problems = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            problems.append(Problem(number, None, "not UTF-8 text"))
    raise ExportRejected(problems)


def _quoted(value: str, limit: int = 40) -> str | None:
    """The value in quotes for a message, unless it may be a PESEL or an e-mail address."""
    value = value[:limit]
    if "@" in value or re.search(r"\d{5}", value) or _CONTROL.search(value):
        return None
    return repr(value)


def _check_header(header: list[str]) -> None:
    missing = [name for name in COLUMNS if name not in header]
    unknown = [name for name in header if name not in COLUMNS]
    repeated = sorted({name for name in header if header.count(name) > 1})
    reasons = []
    if missing:
        reasons.append("missing column " + ", ".join(missing))
    if unknown and not set(header) & set(COLUMNS):
        # Not one name right: most likely the export came without its header row, and these
        # "names" are someone's login, PESEL and address.
        reasons.append("the first line is not a header row")
    elif unknown:
        shown = [_quoted(name) or "(a name not shown)" for name in unknown]
        reasons.append("unknown column " + ", ".join(shown))
    if repeated:
        reasons.append("repeated column " + ", ".join(repeated))
    if reasons:
        expected = ",".join(COLUMNS)
        raise ExportRejected([Problem(1, None, "; ".join(reasons) + f" (expected {expected})")])


def _check_row(
    line: int, fields: list[str], *, header: list[str]
) -> tuple[EplozRow | None, list[Problem]]:
    """Check one line; return the row (or None if unusable) and what is wrong with it."""
    if len(fields) != len(header):
        return None, [Problem(line, None, f"{len(fields)} fields, expected {len(header)}")]
    raw = {name: value.strip() for name, value in zip(header, fields, strict=True)}
    problems = [
        Problem(line, column, "contains a control character (a NUL, a tab, a line break…)")
        for column in COLUMNS
        if _CONTROL.search(raw[column])
    ]

    for column in ("login", "first_name", "last_name"):
        if not raw[column]:
            problems.append(Problem(line, column, "empty"))
    if raw["login"] and re.search(r"\s", raw["login"]):
        problems.append(Problem(line, "login", "contains white space"))
    for column, limit in _LIMITS.items():
        if len(raw[column]) > limit:
            problems.append(Problem(line, column, f"longer than {limit} characters"))

    pesel, reason = _check_pesel(raw["pesel"])
    if reason:
        problems.append(Problem(line, "pesel", reason))

    email = raw["email"]
    if email:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError:
            problems.append(Problem(line, "email", "not a valid e-mail address"))

    status = raw["status"].lower()
    if status not in STATUSES:
        shown = _quoted(raw["status"], 20) or "the value"
        problems.append(Problem(line, "status", f"{shown} is not active or blocked"))

    grants = [grant.strip() for grant in raw["roles"].split(";") if grant.strip()]
    for grant in grants:
        if not _GRANT.fullmatch(grant):
            shown = _quoted(grant) or "a grant"
            problems.append(Problem(line, "roles", f"{shown} is not SYSTEM:ROLE"))
    roles = ";".join(dict.fromkeys(grants))

    row = EplozRow(
        line=line,
        login=raw["login"],
        pesel=pesel,
        first_name=raw["first_name"],
        last_name=raw["last_name"],
        email=email,
        status=status,
        roles=roles,
    )
    return row, problems


def checked_row(line: int, values: Mapping[str, str]) -> EplozRow:
    """Check one account given as a mapping of the export's columns (the demo data uses it)."""
    row, problems = _check_row(line, [values[name] for name in COLUMNS], header=list(COLUMNS))
    if problems or row is None:
        raise ExportRejected(problems)
    return row


def _check_pesel(value: str) -> tuple[str, str | None]:
    """Return the PESEL's digits and, if it is not valid, why (without repeating it)."""
    if not value:
        return value, "empty"
    try:
        return pesel_number.validate(value), None
    except InvalidLength:
        return value, "not a valid PESEL (not 11 digits)"
    except InvalidChecksum:
        return value, "not a valid PESEL (wrong check digit)"
    except InvalidComponent:
        return value, "not a valid PESEL (no such date of birth)"
    except ValidationError:
        return value, "not a valid PESEL (not digits)"


def import_accounts(
    sessions: sessionmaker[Session], rows: Sequence[EplozRow], *, now: datetime
) -> ImportReport:
    """Load checked rows into the directory in one transaction; see :func:`upsert_accounts`."""
    with transaction(sessions) as session:
        return upsert_accounts(session, rows, now=now)


def upsert_accounts(session: Session, rows: Sequence[EplozRow], *, now: datetime) -> ImportReport:
    """Add new logins, update changed ones, leave equal ones alone; flush, do not commit.

    Accounts the table holds that the rows do not list are kept: attempts and UEOZ accounts
    point at them, and an export that misses a few lines must not erase history.
    """
    existing: dict[str, EplozAccount] = {}
    for chunk in _chunks([row.login for row in rows], _CHUNK):
        for account in session.scalars(select(EplozAccount).where(EplozAccount.login.in_(chunk))):
            existing[account.login] = account

    new, changed, unchanged = [], [], 0
    for row in rows:
        values = row.values()
        account = existing.get(row.login)
        if account is None:
            new.append(values | {"imported_at": now})
        elif any(getattr(account, name) != value for name, value in values.items()):
            changed.append(values | {"id": account.id, "imported_at": now})
        else:
            unchanged += 1
    if new:
        session.execute(insert(EplozAccount), new)
    if changed:
        session.execute(update(EplozAccount), changed)
    session.flush()
    total = session.scalar(select(func.count()).select_from(EplozAccount)) or 0
    return ImportReport(
        added=len(new),
        updated=len(changed),
        unchanged=unchanged,
        not_in_file=total - len(rows),
    )


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
