"""Re-key the PESEL hashes: every one the tables hold, rewritten under a new key at once.

A PESEL hash (``domain.privacy.pesel_hash``) stands for a person wherever the PESEL itself
must not, keyed with ``PESEL_HASH_KEY``. The columns that hold one are found in the models,
not listed here, so a table added later is re-keyed too: every column named ``pesel_hash``,
and every column marked ``info={PESEL_HASH: True}`` (``attempts.open_pesel_key``). A column
marked ``info={CHAINED: True}`` is inside the audit log's hash chain and keeps its values:
rewriting them would break every row's link (docs/operations.md, "Re-keying the PESEL
hashes", says what that means for the helpdesk and auditors).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Column, MetaData, Table, bindparam, select, update
from sqlalchemy.orm import Session

from ..domain.privacy import pesel_hash
from .models import CHAINED, PESEL_HASH, Base

#: Rows read and rewritten per statement: memory stays flat on a table of any length.
BATCH = 2000


def hashed_columns(metadata: MetaData = Base.metadata) -> dict[Table, list[Column[str]]]:
    """Return, per table, the columns holding a PESEL hash that a re-key rewrites."""
    found: dict[Table, list[Column[str]]] = {}
    for table in metadata.sorted_tables:
        for column in table.columns:
            if _holds_pesel_hash(column) and not column.info.get(CHAINED):
                found.setdefault(table, []).append(column)
    return found


def chained_columns(metadata: MetaData = Base.metadata) -> list[Column[str]]:
    """The PESEL hash columns inside the audit chain, which a re-key leaves as they are."""
    return [
        column
        for table in metadata.sorted_tables
        for column in table.columns
        if _holds_pesel_hash(column) and column.info.get(CHAINED)
    ]


def _holds_pesel_hash(column: Column[str]) -> bool:
    return column.name == "pesel_hash" or bool(column.info.get(PESEL_HASH))


@dataclass
class ColumnReport:
    """What a re-key did to one column."""

    rekeyed: int = 0
    already: int = 0  # under the new key already: a second run, or rows written since
    unknown: int = 0  # under neither key: the old key is not the one they were made with


@dataclass
class RekeyReport:
    columns: dict[str, ColumnReport] = field(default_factory=dict)

    @property
    def unknown(self) -> dict[str, int]:
        return {name: each.unknown for name, each in self.columns.items() if each.unknown}


class RekeyRefused(RuntimeError):
    """Some hashes are under neither key; nothing was changed."""

    def __init__(self, report: RekeyReport) -> None:
        self.report = report
        where = ", ".join(f"{name} ({count} row(s))" for name, count in report.unknown.items())
        super().__init__(
            f"hashes under neither key in {where}: is OLD_PESEL_HASH_KEY the key they were "
            "made with? Nothing changed"
        )


def rekey(
    session: Session, old_key: bytes, new_key: bytes, metadata: MetaData = Base.metadata
) -> RekeyReport:
    """Rewrite every PESEL hash made with ``old_key`` under ``new_key``; flush, do not commit.

    A table that keeps the PESEL beside its hash is rewritten from it. A table that keeps
    only the hash is rewritten through the hashes of the PESELs the other tables hold. A hash
    already under the new key is left (a second run changes nothing); a hash under neither
    key raises :class:`RekeyRefused` once every table has been counted, and the caller rolls
    the whole transaction back.
    """
    report = RekeyReport()
    columns = hashed_columns(metadata)
    anonymous = {table: hashed for table, hashed in columns.items() if "pesel" not in table.c}
    translation = _translation(session, columns, old_key, new_key) if anonymous else {}
    translated = set(translation.values())
    for table, hashed in columns.items():
        counts = {column.name: ColumnReport() for column in hashed}
        for batch in _batches(session, table, hashed):
            changes = []
            for row in batch:
                old, new = _hashes(row, old_key, new_key, translation, translated)
                change = {}
                for column in hashed:
                    value, tally = row[column.name], counts[column.name]
                    if value is None:
                        continue
                    if value == new and new is not None:
                        tally.already += 1
                    elif value == old and new is not None:
                        change[f"new_{column.name}"] = new
                        tally.rekeyed += 1
                    else:
                        tally.unknown += 1
                if change:
                    changes.append({"row_key": row["row_key"], **_keep(row, hashed, change)})
            if changes:
                session.execute(_rewrite(table, hashed), changes)
        for name, tally in counts.items():
            report.columns[f"{table.name}.{name}"] = tally
    if report.unknown:
        raise RekeyRefused(report)
    return report


def _hashes(
    row: dict[str, object],
    old_key: bytes,
    new_key: bytes,
    translation: dict[str, str],
    translated: set[str],
) -> tuple[str | None, str | None]:
    """The row's PESEL hash under the old key and under the new one (None: not known)."""
    pesel = row.get("pesel")
    if isinstance(pesel, str):
        return pesel_hash(old_key, pesel), pesel_hash(new_key, pesel)
    # No PESEL in this table: the first hash of the row the translation knows, either way.
    for name, value in row.items():
        if name == "row_key" or not isinstance(value, str):
            continue
        if value in translation:
            return value, translation[value]
        if value in translated:
            return None, value
    return None, None


def _keep(row: dict[str, object], hashed: list[Column[str]], change: dict[str, str]) -> dict:
    """Every hashed column's value after the change: rewritten, or as it was."""
    return {
        f"new_{column.name}": change.get(f"new_{column.name}", row[column.name])
        for column in hashed
    }


def _rewrite(table: Table, hashed: list[Column[str]]):  # type: ignore[no-untyped-def]
    (key,) = table.primary_key.columns
    return (
        update(table)
        .where(key == bindparam("row_key"))
        .values({column.name: bindparam(f"new_{column.name}") for column in hashed})
    )


def _batches(
    session: Session, table: Table, hashed: list[Column[str]]
) -> Iterator[list[dict[str, object]]]:
    """The table's rows in primary key order, a batch at a time (keyset: no open cursor)."""
    (key,) = table.primary_key.columns
    wanted = [key.label("row_key"), *hashed]
    if "pesel" in table.c:
        wanted.append(table.c.pesel)
    last = None
    while True:
        query = select(*wanted).order_by(key).limit(BATCH)
        if last is not None:
            query = query.where(key > last)
        rows = [dict(row._mapping) for row in session.execute(query)]
        if not rows:
            return
        yield rows
        last = rows[-1]["row_key"]


def _translation(
    session: Session,
    columns: dict[Table, list[Column[str]]],
    old_key: bytes,
    new_key: bytes,
) -> dict[str, str]:
    """Old hash → new hash for every PESEL a table holds beside its hash.

    Only needed for a table that keeps a hash without the PESEL; built once, in memory.
    """
    pesels: set[str] = set()
    for table in columns:
        if "pesel" in table.c:
            pesels.update(session.scalars(select(table.c.pesel).distinct()))
    return {pesel_hash(old_key, pesel): pesel_hash(new_key, pesel) for pesel in pesels}
