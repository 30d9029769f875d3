"""The e-PLOZ directory: where the search looks accounts up, and how its export is loaded.

e-PLOZ is the legacy platform; the service only reads it. The search worker sees it through
:class:`Directory`, so that a later adapter can ask the live e-PLOZ instead of the table that
:class:`TableDirectory` reads. The table is filled from e-PLOZ's CSV export by
:func:`read_export` (every bad line named, nothing kept) and :func:`import_accounts` (one
transaction, an upsert keyed by login, so importing the same file twice changes nothing;
with ``full=True`` the file is the whole directory, and the accounts it does not list go).
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError
from stdnum.pl import pesel as pesel_number

from ..db.engine import snapshot, transaction
from ..db.models import EPLOZ_REMOVED as REMOVED
from ..db.models import Attempt, EplozAccount, UeozAccount
from ..domain.identity import EMAIL_MAX, FAMILY_NAME_MAX, GIVEN_NAMES_MAX, LOGIN_MAX
from ..domain.text import forbidden_characters

COLUMNS = ("login", "pesel", "first_name", "last_name", "email", "status", "roles")
STATUSES = ("active", "blocked")
_GRANT = re.compile(r"[^:;\s]+:[^:;\s]+")
_LIMITS = {
    "login": LOGIN_MAX,
    "first_name": GIVEN_NAMES_MAX,
    "last_name": FAMILY_NAME_MAX,
    "email": EMAIL_MAX,
}
# Where a line ends, for the CSV parser as for a file opened with newline="": \r\n, \r or \n.
_LINE_END = re.compile(rb"\r\n|\r|\n")
_NOT_UTF8 = "not UTF-8 text"
_CHUNK = 1000  # logins or ids per IN (…) when comparing a large export with the table
_T = TypeVar("_T")


class DirectoryUnavailable(RuntimeError):
    """e-PLOZ could not be asked; the search is retried later.

    Part of the :class:`Directory` contract for an adapter that asks the live e-PLOZ (no
    answer, an HTTP 5xx…): the worker retries whatever a directory raises, and this is the
    error such an adapter raises to say so. :class:`TableDirectory` never needs it.
    """


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


class Directory(Protocol):
    """Where the search worker looks e-PLOZ accounts up.

    A directory that cannot reach e-PLOZ raises :class:`DirectoryUnavailable`; the worker
    searches again later, with backoff, and gives up with code 207 after its last try.
    """

    def accounts_by_pesel(self, pesel: str) -> list[EplozAccountView]:
        """Return every e-PLOZ account registered under this PESEL (none, one or several)."""

    def is_migrated_elsewhere(self, account_id: int, pesel_hash: str) -> bool:
        """Say whether a UEOZ account of another person already holds this e-PLOZ account."""


# Built once: SQLAlchemy takes longer to build a statement than to run it from its cache.
ACCOUNTS_UNDER_PESEL = (
    select(EplozAccount)
    .where(EplozAccount.pesel == bindparam("pesel"))
    .where(EplozAccount.status != REMOVED)
    .order_by(EplozAccount.id)
)
HOLDER_OTHER_THAN = (
    select(UeozAccount.id)
    .where(UeozAccount.eploz_account_id == bindparam("account"))
    .where(UeozAccount.pesel_hash != bindparam("pesel_hash"))
)


class TableDirectory:
    """The directory as the ``eploz_accounts`` table, loaded by ``eploz import``."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # Both look-ups are reads from a snapshot (db.engine.snapshot): on SQLite a plain session
    # would begin with BEGIN IMMEDIATE and queue for the write lock behind any long write (an
    # import), until the search timed out and counted as a failed try of the directory.
    def accounts_by_pesel(self, pesel: str) -> list[EplozAccountView]:
        with snapshot(self.sessions) as session:
            rows = session.scalars(ACCOUNTS_UNDER_PESEL, {"pesel": pesel}).all()
        return [_view(row) for row in rows]

    def is_migrated_elsewhere(self, account_id: int, pesel_hash: str) -> bool:
        # The person's own UEOZ account (left unverified by an earlier, expired attempt) has
        # the same PESEL hash and is not "elsewhere": they may finish the migration.
        with snapshot(self.sessions) as session:
            holder = session.scalar(
                HOLDER_OTHER_THAN, {"account": account_id, "pesel_hash": pesel_hash}
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
    removed: int = 0  # with full=True: accounts the export no longer lists, deleted

    @property
    def rows(self) -> int:
        return self.added + self.updated + self.unchanged


def read_export(data: bytes) -> list[EplozRow]:
    """Parse and check an export file; raise :class:`ExportRejected` naming every bad line.

    Each physical line is parsed on its own: an e-PLOZ export has no field over two lines,
    and a reader that took the whole file would lose its place at the first stray quote
    (reading on to the next quote, lines later) and could name nothing after it. A quoted
    field that does not end on its line is then that line's own problem, as is a line that
    is not UTF-8.
    """
    lines = _lines(data)
    first = next(lines, None)
    if first is None:
        raise ExportRejected([Problem(1, None, "the file is empty; expected a header row")])
    if first[1] is None:
        # Without its header no line can be checked; still, every line that is not UTF-8.
        undecoded = [first, *(line for line in lines if line[1] is None)]
        raise ExportRejected([Problem(number, None, _NOT_UTF8) for number, _ in undecoded])
    try:
        header = _fields(first[1])
    except csv.Error as error:
        raise ExportRejected([Problem(1, None, f"not a CSV header ({error})")]) from error
    columns = [name.strip() for name in header]
    _check_header(columns)

    rows: list[EplozRow] = []
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    for line, physical in lines:
        if physical is None:
            problems.append(Problem(line, None, _NOT_UTF8))
            continue
        try:
            fields = _fields(physical)
        except csv.Error as error:
            problems.append(Problem(line, None, _csv_reason(physical, error)))
            continue
        if not any(field.strip() for field in fields):
            continue  # blank lines, typically at the end of the file
        row, row_problems = _check_row(line, fields, header=columns)
        if row is not None and row.login:
            if row.login in first_line_of:
                earlier = first_line_of[row.login]
                row_problems.append(Problem(line, "login", f"the same login as line {earlier}"))
            else:
                first_line_of[row.login] = line
        problems.extend(row_problems)
        if row is not None and not row_problems:
            rows.append(row)
    if problems:
        raise ExportRejected(problems)
    return rows


def _fields(physical: str) -> list[str]:
    """Split one physical line (with or without its line break) into its fields.

    Raises :class:`csv.Error` when the line is not one whole CSV record; a quote left open
    at the end of the line is one, since the line break is not passed to the parser.
    """
    body = physical.rstrip("\r\n")
    return next(csv.reader([body], strict=True), [])


def _csv_reason(physical: str, error: csv.Error) -> str:
    """Why a line is not CSV; csv's own messages name only the delimiter and the quote."""
    try:
        # Parsed whole once its quote is closed: the line's one fault is a field that goes
        # on past the line break (a stray quote, or a field written over several lines).
        _fields(physical.rstrip("\r\n") + '"')
    except csv.Error:
        return f"not valid CSV ({error})"
    return "not valid CSV (a quoted field does not end on this line)"


def _lines(data: bytes) -> Iterator[tuple[int, str | None]]:
    """Yield each line of the file with its number, decoded, or None if it is not UTF-8.

    The bytes are split where the CSV parser ends a line (\\r\\n, \\r or \\n), so a file
    with any of these line ends is numbered as the parser reads it; no UTF-8 character holds
    those bytes, so the split is the one the decoded text would have. Each line is decoded on
    its own: one that is not UTF-8 is named, and the others are still read and checked. A
    byte order mark may open the file.
    """
    data = data.removeprefix(codecs.BOM_UTF8)
    if not data:
        return
    raws = _LINE_END.split(data)
    if not raws[-1]:
        raws.pop()  # the last line's line end ends the file
    for number, raw in enumerate(raws, start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None


def _check_header(header: list[str]) -> None:
    missing = [name for name in COLUMNS if name not in header]
    unknown = [name for name in header if name not in COLUMNS]
    # Only our own column names are ever printed (an unknown one may be personal data).
    repeated = [name for name in COLUMNS if header.count(name) > 1]
    reasons = []
    if missing:
        reasons.append("missing column " + ", ".join(missing))
    if unknown and not set(header) & set(COLUMNS):
        # Not one name right: most likely the export came without its header row, and these
        # "names" are someone's login, PESEL and address.
        reasons.append("the first line is not a header row")
    elif unknown:
        # By position, never by what the file says: a shifted file's "name" may be a
        # person's name, date of birth or PESEL, and these messages reach terminals and logs.
        positions = [str(number) for number, name in enumerate(header, 1) if name not in COLUMNS]
        reasons.append("unknown column at position " + ", ".join(positions))
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
    given = dict(zip(header, fields, strict=True))
    # Checked before the white space around a value is stripped: NEL and the line separator
    # are white space to str.strip(), and would otherwise go unnamed at either end of a field.
    problems = [
        Problem(line, column, reason)
        for column in COLUMNS
        if (reason := forbidden_characters(given[column]))
    ]
    raw = {name: value.strip() for name, value in given.items()}

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
    # Values are named by place, never quoted: in a shifted line they are someone's name,
    # date of birth or PESEL.
    if status not in STATUSES:
        problems.append(Problem(line, "status", "not active or blocked"))

    grants = [grant.strip() for grant in raw["roles"].split(";") if grant.strip()]
    for number, grant in enumerate(grants, 1):
        if not _GRANT.fullmatch(grant):
            problems.append(Problem(line, "roles", f"grant {number} is not SYSTEM:ROLE"))
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
    sessions: sessionmaker[Session],
    rows: Sequence[EplozRow],
    *,
    now: datetime,
    full: bool = False,
) -> ImportReport:
    """Load checked rows into the directory in one transaction; see :func:`upsert_accounts`."""
    with transaction(sessions) as session:
        return upsert_accounts(session, rows, now=now, full=full)


def upsert_accounts(
    session: Session, rows: Sequence[EplozRow], *, now: datetime, full: bool = False
) -> ImportReport:
    """Add new logins, update changed ones, leave equal ones alone; flush, do not commit.

    Accounts the table holds that the rows do not list are kept: attempts and UEOZ accounts
    point at them, and an export that misses a few lines must not erase history. With
    ``full`` the rows are the complete export, and such accounts are removed (see
    :func:`_remove_unlisted`) — the only way an account e-PLOZ itself deleted, such as the
    second account behind a PESEL (code 204), leaves the directory.
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
    unlisted = _unlisted(session, {row.login for row in rows}) if full else []
    # Every row this import changes or removes is locked first, in id order: the order in
    # which a step's share lock takes the accounts under a PESEL (matched_eploz_account in
    # states/base.py). Taken in the file's order instead, two accounts under one PESEL
    # deadlocked an import against a search on PostgreSQL.
    for chunk in _chunks(sorted([values["id"] for values in changed] + unlisted), _CHUNK):
        session.execute(
            select(EplozAccount.id)
            .where(EplozAccount.id.in_(chunk))
            .order_by(EplozAccount.id)
            .with_for_update()
        )
    if new:
        session.execute(insert(EplozAccount), new)
    if changed:
        session.execute(update(EplozAccount), changed)
    session.flush()
    removed = _remove_unlisted(session, unlisted) if full else 0
    total = (
        session.scalar(
            select(func.count()).select_from(EplozAccount).where(EplozAccount.status != REMOVED)
        )
        or 0
    )
    return ImportReport(
        added=len(new),
        updated=len(changed),
        unchanged=unchanged,
        not_in_file=total - len(rows),
        removed=removed,
    )


def _unlisted(session: Session, listed: set[str]) -> list[int]:
    """The ids of the accounts whose login is not in ``listed``, in id order."""
    return [
        account_id
        for account_id, login in session.execute(
            select(EplozAccount.id, EplozAccount.login).order_by(EplozAccount.id)
        )
        if login not in listed
    ]


def _remove_unlisted(session: Session, unlisted: list[int]) -> int:
    """Remove the ``unlisted`` accounts (locked by the caller), except those held.

    An account is held by a UEOZ account or an open attempt pointing at it: it is what that
    person's migration took over or is taking over, and it stays as it is. An account only
    ended attempts point at (found, then cancelled or expired) is what their logs explain
    themselves by, and the foreign keys keep it: it is marked ``removed``, which the search
    no longer sees (a later export that lists it again brings it back). Any other is
    deleted. Return how many were removed, either way.
    """
    removed = 0
    for chunk in _chunks(unlisted, _CHUNK):
        # The rows are locked before asking who holds them (PostgreSQL; on SQLite this import
        # holds the write lock): a search that records one of them as found either committed
        # before, and its attempt is seen below, or waits for this transaction, meets the
        # foreign key, is refused as a conflict, and searches again once its lease ends.
        # Every attempt that names one of them: an open one holds it, an ended one keeps it.
        named_by = session.execute(
            select(Attempt.eploz_account_id, Attempt.open_pesel_key.is_not(None)).where(
                Attempt.eploz_account_id.in_(chunk)
            )
        ).all()
        in_history = {account_id for account_id, _open in named_by}
        held = {account_id for account_id, open_ in named_by if open_} | set(
            session.scalars(
                select(UeozAccount.eploz_account_id).where(UeozAccount.eploz_account_id.in_(chunk))
            )
        )
        free = [account_id for account_id in chunk if account_id not in held]
        keep = [account_id for account_id in free if account_id in in_history]
        gone = [account_id for account_id in free if account_id not in in_history]
        if keep:
            result = session.execute(
                update(EplozAccount)
                .where(EplozAccount.id.in_(keep))
                .where(EplozAccount.status != REMOVED)
                .values(status=REMOVED),
                execution_options={"synchronize_session": False},
            )
            removed += result.rowcount
        if gone:
            result = session.execute(
                delete(EplozAccount).where(EplozAccount.id.in_(gone)),
                execution_options={"synchronize_session": False},
            )
            removed += result.rowcount
    return removed


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
