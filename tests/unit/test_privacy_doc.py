"""docs/privacy.md names every table, and every column the retention purge empties."""

from __future__ import annotations

import re
from pathlib import Path

from ueoz_migration.db.models import Base
from ueoz_migration.retention import EXPIRED_ROWS, PERSONAL_DATA

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"


def rows_of_the_database_table(*, whole: bool = False) -> dict[str, str]:
    """The database table of the page: each table's name → its rows' column cells (or, with
    ``whole``, their every cell)."""
    section = DOC.read_text(encoding="utf-8").split("## The database", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        for table in re.findall(r"`(\w+)`", cells[0]):
            text = " ".join(cells[1:]) if whole else cells[1]
            rows[table] = rows.get(table, "") + " " + text
    return rows


def test_every_table_of_the_schema_is_on_the_page():
    named = rows_of_the_database_table()

    missing = set(Base.metadata.tables) - set(named)

    assert not missing, f"docs/privacy.md does not say what these tables hold: {sorted(missing)}"


def test_every_column_the_purge_empties_is_on_the_page_under_its_table():
    named = rows_of_the_database_table()
    purged = {
        (part.table.__tablename__, column) for part in PERSONAL_DATA for column in part.emptied
    }

    missing = {
        (table, column) for table, column in purged if f"`{column}`" not in named.get(table, "")
    }

    assert not missing, f"docs/privacy.md does not list these purged columns: {sorted(missing)}"


def test_every_table_whose_rows_expire_says_the_purge_deletes_them():
    rows = rows_of_the_database_table(whole=True)

    silent = {
        expiring.table.__tablename__
        for expiring in EXPIRED_ROWS
        if "retention purge" not in rows.get(expiring.table.__tablename__, "")
    }

    assert not silent, f"docs/privacy.md does not say the purge deletes: {sorted(silent)}"
