"""docs/privacy.md names every table, and every column the retention purge empties."""

from __future__ import annotations

import re
from pathlib import Path

from ueoz_migration.db.models import Base
from ueoz_migration.retention import EXPIRED_ROWS, PERSONAL_DATA

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"


def rows_of_the_database_table() -> dict[str, str]:
    """The database table of the page: each table's name → the text of its rows."""
    section = DOC.read_text(encoding="utf-8").split("## The database", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        for table in re.findall(r"`(\w+)`", cells[0]):
            rows[table] = rows.get(table, "") + " " + cells[1]
    return rows


def test_every_table_of_the_schema_is_on_the_page():
    named = rows_of_the_database_table()

    missing = set(Base.metadata.tables) - set(named)

    assert not missing, f"docs/privacy.md does not say what these tables hold: {sorted(missing)}"


def test_every_column_the_purge_empties_is_on_the_page_under_its_table():
    named = rows_of_the_database_table()
    purged = {
        (part.table.__tablename__, column) for part in PERSONAL_DATA for column in part.emptied
    } | {(table.__tablename__, "data") for table, _key, _expiry in EXPIRED_ROWS}

    missing = {
        (table, column) for table, column in purged if f"`{column}`" not in named.get(table, "")
    }

    assert not missing, f"docs/privacy.md does not list these purged columns: {sorted(missing)}"
