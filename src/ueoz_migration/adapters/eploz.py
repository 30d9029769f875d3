"""The e-PLOZ directory: where the search looks accounts up, and how its export is loaded.

e-PLOZ is the legacy platform; the service only reads it. The search worker sees it through
:class:`Directory`, so that a later adapter can ask the live e-PLOZ instead of the table that
:class:`TableDirectory` reads. The table is filled from e-PLOZ's CSV export by
:func:`read_export` (every bad line named, nothing kept) and :func:`import_accounts` (one
transaction, an upsert keyed by login, so importing the same file twice changes nothing;
with ``full=True`` the file is the whole directory, and the accounts it does not list go).
Both stream: an export of millions of lines is never held in memory (docs/operations.md,
"Loading the e-PLOZ directory").
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, TypeVar

import psycopg
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
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
_READ = 1 << 20  # bytes read from the file at a time
_MAX_LINE = 1 << 20  # a line of e-PLOZ's weighs under 1 kB: longer is no line of an export
_TOO_LONG = f"longer than {_MAX_LINE} bytes"
# Between the values of a valid row in the temporary file: a control character, which no
# value may hold (forbidden_characters), as none may hold the line end after the row.
_SEPARATOR = "\x1f"
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


class CheckedExport:
    """The valid rows of an export, kept in a temporary file rather than in memory.

    Iterated as often as the import needs (each time from the first row); ``len`` is the
    number of rows. Close it (or use it as a context manager) to delete the file, an
    unnamed one that no other process can open.
    """

    def __init__(self, spill: BinaryIO, rows: int) -> None:
        self._spill = spill
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    def __iter__(self) -> Iterator[EplozRow]:
        self._spill.seek(0)
        for record in self._spill:
            line, *values = record.decode("utf-8").removesuffix("\n").split(_SEPARATOR)
            yield EplozRow(int(line), *values)

    def close(self) -> None:
        self._spill.close()

    def __enter__(self) -> CheckedExport:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_export(source: BinaryIO) -> CheckedExport:
    """Check an export file in one streaming pass; raise :class:`ExportRejected` naming every
    bad line, or return its valid rows (:class:`CheckedExport`).

    Each physical line is parsed on its own: an e-PLOZ export has no field over two lines,
    and a reader that took the whole file would lose its place at the first stray quote
    (reading on to the next quote, lines later) and could name nothing after it. A quoted
    field that does not end on its line is then that line's own problem, as is a line that
    is not UTF-8.

    Memory stays flat whatever the file's length: the lines are read a chunk at a time, the
    valid rows go to a temporary file, and a repeated login is found with a fixed-size bit
    table (:class:`_LoginsSeen`), the file read a second time only for the few logins it
    flags. ``source`` must be seekable.
    """
    lines = _lines(source)
    first = next(lines, None)
    if first is None:
        raise ExportRejected([Problem(1, None, "the file is empty; expected a header row")])
    if first[1] is None:
        # Without its header no line can be checked; still, every line that is not UTF-8.
        unreadable = [first, *(line for line in lines if line[1] is None)]
        raise ExportRejected(
            [Problem(number, None, reason or _NOT_UTF8) for number, _, reason in unreadable]
        )
    try:
        header = _fields(first[1])
    except csv.Error as error:
        raise ExportRejected([Problem(1, None, f"not a CSV header ({error})")]) from error
    columns = [name.strip() for name in header]
    _check_header(columns)

    spill = tempfile.TemporaryFile()  # noqa: SIM115 (closed by CheckedExport, or below)
    rows = 0
    problems: list[Problem] = []
    seen = _LoginsSeen()
    try:
        for line, physical, reason in lines:
            if physical is None:
                problems.append(Problem(line, None, reason or _NOT_UTF8))
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
                seen.add(row.login)
            problems.extend(row_problems)
            if row is not None and not row_problems and not problems:
                spill.write(_SEPARATOR.join([str(line), *row.values().values()]).encode())
                spill.write(b"\n")
                rows += 1
        if seen.repeated:
            # Every line of a login the table flagged, and who came first: exact at last.
            problems.extend(_repeated_logins(source, columns, seen.repeated))
            problems.sort(key=lambda problem: problem.line)  # stable: a line's own order
    except BaseException:
        spill.close()
        raise
    if problems:
        spill.close()
        raise ExportRejected(problems)
    spill.flush()
    return CheckedExport(spill, rows)


class _LoginsSeen:
    """Logins met so far, in a table of bits: a repeated login is always flagged, and a few
    that are not repeated are flagged too (a shared bit), for the second look to clear.

    A set of two million logins would hold ~200 MB; this table holds 16 MiB whatever the
    file's length, and flags ~1.5 % of two million logins by chance. The standard library
    has no bit array, and this needs no more than one.
    """

    BITS = 1 << 27

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)
        self.repeated: set[str] = set()

    def add(self, login: str) -> None:
        # str hashes vary between processes, never within one: fine for one pass's table.
        bit = hash(login) & (self.BITS - 1)
        byte, mask = bit >> 3, 1 << (bit & 7)
        if self._bits[byte] & mask:
            self.repeated.add(login)
        else:
            self._bits[byte] |= mask


def _repeated_logins(source: BinaryIO, columns: list[str], flagged: set[str]) -> list[Problem]:
    """Name each line whose login a line before it had (among the ``flagged`` logins)."""
    source.seek(0)
    where = columns.index("login")
    first_line_of: dict[str, int] = {}
    problems = []
    for line, physical, _reason in _lines(source):
        if line == 1 or physical is None:
            continue
        try:
            fields = _fields(physical)
        except csv.Error:
            continue
        if len(fields) != len(columns) or (login := fields[where].strip()) not in flagged:
            continue
        if login in first_line_of:
            earlier = first_line_of[login]
            problems.append(Problem(line, "login", f"the same login as line {earlier}"))
        else:
            first_line_of[login] = line
    return problems


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


def _lines(source: BinaryIO) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield each line of the file with its number, decoded (None if it cannot be), and why
    it cannot be (None when it can).

    The bytes are split where the CSV parser ends a line (\\r\\n, \\r or \\n), so a file
    with any of these line ends is numbered as the parser reads it; no UTF-8 character holds
    those bytes, so the split is the one the decoded text would have. Each line is decoded on
    its own: one that is not UTF-8 is named, and the others are still read and checked. A
    byte order mark may open the file. The file is read :data:`_READ` bytes at a time; a
    line longer than :data:`_MAX_LINE` is named, not kept.
    """
    number, pending, too_long, first = 0, b"", False, True
    while chunk := source.read(_READ):
        if first:
            chunk, first = chunk.removeprefix(codecs.BOM_UTF8), False
        data, start = pending + chunk, 0
        for end in _LINE_END.finditer(data):
            if end.end() == len(data) and end.group() == b"\r":
                break  # the next chunk may begin with this \r's \n
            number += 1
            yield (number, *_decoded(data[start : end.start()], too_long))
            start, too_long = end.end(), False
        pending = data[start:]
        if len(pending) > _MAX_LINE:
            pending, too_long = b"", True  # its end is yet to come; only its number is
    ends = _LINE_END.split(pending)
    if not ends[-1]:
        ends.pop()  # the last line's line end ends the file
    for raw in ends:
        number += 1
        yield (number, *_decoded(raw, too_long))
        too_long = False
    if too_long:  # a line too long ran to the end of the file
        yield number + 1, None, _TOO_LONG


def _decoded(raw: bytes, too_long: bool) -> tuple[str | None, str | None]:
    if too_long:
        return None, _TOO_LONG
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, _NOT_UTF8


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


class Rows(Protocol):
    """Checked rows the import can count and read more than once: a list, or a
    :class:`CheckedExport`."""

    def __iter__(self) -> Iterator[EplozRow]: ...

    def __len__(self) -> int: ...


def import_accounts(
    sessions: sessionmaker[Session],
    rows: Rows,
    *,
    now: datetime,
    full: bool = False,
) -> ImportReport:
    """Load checked rows into the directory in one transaction; see :func:`upsert_accounts`."""
    with transaction(sessions) as session:
        return upsert_accounts(session, rows, now=now, full=full)


def upsert_accounts(
    session: Session, rows: Rows, *, now: datetime, full: bool = False
) -> ImportReport:
    """Add new logins, update changed ones, leave equal ones alone; flush, do not commit.

    Accounts the table holds that the rows do not list are kept: attempts and UEOZ accounts
    point at them, and an export that misses a few lines must not erase history. With
    ``full`` the rows are the complete export, and such accounts are removed (see
    :func:`_remove_unlisted`) — the only way an account e-PLOZ itself deleted, such as the
    second account behind a PESEL (code 204), leaves the directory.

    The rows are read in chunks, twice at most, so that memory does not grow with the
    export: the first pass adds the new logins and notes which accounts the rows change
    (and, with ``full``, which they list); the second, only when some changed, updates
    them, once they are locked.
    """
    if session.get_bind().dialect.name == "postgresql":
        # The look-ups by login below must use its index. The planner's statistics are of
        # the table before this transaction (empty, for a first import): it would scan the
        # table this import keeps growing, once per chunk, and two million rows would take
        # hours instead of minutes.
        session.execute(text("SET LOCAL enable_seqscan = off"))
    known = session.scalar(select(func.max(EplozAccount.id))) or 0  # accounts before this
    changed, listed = _Ids(known), _Ids(known) if full else None
    added = 0
    for chunk in _batches(rows, _CHUNK):
        new = []
        stored = _stored(session, chunk) if known else {}
        for row in chunk:
            account = stored.get(row.login)
            if account is None:
                new.append(row.values() | {"imported_at": now})
                continue
            if listed is not None:
                listed.add(account[0])
            if account[1:] != _compared(row):
                changed.add(account[0])
        if new:
            _add_accounts(session, new)
            added += len(new)
    unlisted = _unlisted(session, listed, known) if listed is not None else _Ids(0)
    # Every row this import changes or removes is locked first, in id order: the order in
    # which a step's share lock takes the accounts under a PESEL (matched_eploz_account in
    # states/base.py). Taken in the file's order instead, two accounts under one PESEL
    # deadlocked an import against a search on PostgreSQL.
    for chunk in _batches(changed.union(unlisted), _CHUNK):
        session.execute(
            select(EplozAccount.id)
            .where(EplozAccount.id.in_(chunk))
            .order_by(EplozAccount.id)
            .with_for_update()
        )
    updated = 0
    if changed:
        for chunk in _batches(rows, _CHUNK):
            stored = _stored(session, chunk)
            updates = [
                row.values() | {"id": account[0], "imported_at": now}
                for row in chunk
                if (account := stored.get(row.login)) is not None
                and account[0] in changed
                and account[1:] != _compared(row)
            ]
            if updates:
                session.execute(update(EplozAccount), updates)
                updated += len(updates)
    session.flush()
    removed = _remove_unlisted(session, unlisted) if full else 0
    total = (
        session.scalar(
            select(func.count()).select_from(EplozAccount).where(EplozAccount.status != REMOVED)
        )
        or 0
    )
    return ImportReport(
        added=added,
        updated=updated,
        unchanged=len(rows) - added - updated,
        not_in_file=total - len(rows),
        removed=removed,
    )


_COMPARED = [getattr(EplozAccount, name) for name in COLUMNS[1:]]
_ADDED = [*COLUMNS, "imported_at"]
_COPY_ADDED = f"COPY eploz_accounts ({', '.join(_ADDED)}) FROM STDIN"


def _add_accounts(session: Session, new: list[dict[str, object]]) -> None:
    """Insert new accounts in the import's transaction.

    On PostgreSQL with COPY, which takes two million rows in a fraction of the time row-wise
    INSERTs do (docs/performance.md, "Loading the e-PLOZ directory"); its errors are raised
    as SQLAlchemy's, as an INSERT's would be, without the rows.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(insert(EplozAccount), new)
        return
    driver = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(_COPY_ADDED) as copy:
            for values in new:
                copy.write_row([values[name] for name in _ADDED])
    except psycopg.Error as error:
        raise DBAPIError.instance(
            _COPY_ADDED, None, error, psycopg.Error, hide_parameters=True
        ) from None


def _stored(session: Session, chunk: Sequence[EplozRow]) -> dict[str, tuple]:
    """The accounts the table holds under the chunk's logins: login → (id, *values)."""
    return {
        login: (account_id, *values)
        for login, account_id, *values in session.execute(
            select(EplozAccount.login, EplozAccount.id, *_COMPARED).where(
                EplozAccount.login.in_([row.login for row in chunk])
            )
        )
    }


def _compared(row: EplozRow) -> tuple:
    return tuple(getattr(row, name) for name in COLUMNS[1:])


class _Ids:
    """A set of account ids up to a known greatest one, as a table of bits, in id order.

    An export of two million accounts may change or leave out every one of them: a set of
    that many ints would hold ~100 MB, this ~250 kB. The standard library has no bit array.
    """

    def __init__(self, greatest: int) -> None:
        self._bits = bytearray(greatest // 8 + 1)
        self._count = 0

    def add(self, account_id: int) -> None:
        byte, mask = account_id >> 3, 1 << (account_id & 7)
        if byte >= len(self._bits):  # added since the import began (another one's, committed)
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self._count += 1

    def __contains__(self, account_id: object) -> bool:
        if not isinstance(account_id, int) or account_id >> 3 >= len(self._bits):
            return False
        return bool(self._bits[account_id >> 3] & (1 << (account_id & 7)))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for byte, bits in enumerate(self._bits):
            if bits:
                yield from (byte * 8 + bit for bit in range(8) if bits >> bit & 1)

    def union(self, other: _Ids) -> _Ids:
        both = _Ids(0)
        longer, shorter = sorted((self._bits, other._bits), key=len, reverse=True)
        both._bits = bytearray(longer)
        for index, bits in enumerate(shorter):
            both._bits[index] |= bits
        both._count = sum(bits.bit_count() for bits in both._bits)
        return both


def _unlisted(session: Session, listed: _Ids, known: int) -> _Ids:
    """The accounts the table held before this import that the rows do not list."""
    unlisted = _Ids(known)
    query = select(EplozAccount.id).where(EplozAccount.id <= known).order_by(EplozAccount.id)
    for account_id in session.scalars(query, execution_options={"yield_per": 10_000}):
        if account_id not in listed:
            unlisted.add(account_id)
    return unlisted


def _remove_unlisted(session: Session, unlisted: Iterable[int]) -> int:
    """Remove the ``unlisted`` accounts (locked by the caller), except those held.

    An account is held by a UEOZ account or an open attempt pointing at it: it is what that
    person's migration took over or is taking over, and it stays as it is. An account only
    ended attempts point at (found, then cancelled or expired) is what their logs explain
    themselves by, and the foreign keys keep it: it is marked ``removed``, which the search
    no longer sees (a later export that lists it again brings it back). Any other is
    deleted. Return how many were removed, either way.
    """
    removed = 0
    for chunk in _batches(unlisted, _CHUNK):
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


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """``items`` in lists of ``size`` (the last one shorter), read as they come."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
