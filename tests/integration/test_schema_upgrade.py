"""`ueoz-migration db upgrade`: two processes at once, revisions, a database it cannot use.

docs/operations.md promises that the upgrade is safe "from two machines at once": on
PostgreSQL an advisory lock serialises the upgrades (db/schema.py), on SQLite the write lock
every transaction takes up front (db/engine.py). Each process starts the real command, and
stops at a start line just before its first use of the database; once both are there, the
test lets them go together, so that the two upgrades run into each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from tests.conftest import TEST_KEY, postgres_url
from tests.ports import free_port
from ueoz_migration.cli import main
from ueoz_migration.db.engine import make_engine
from ueoz_migration.db.models import Base
from ueoz_migration.db.schema import alembic_config

# `ueoz-migration db upgrade`, waiting for a line on its standard input before it first
# uses a connection (after the connection's setup, before its first transaction).
AT_THE_START_LINE = """
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

from ueoz_migration.cli import main


@event.listens_for(Engine, "engine_connect")
def start_line(connection):
    if not getattr(start_line, "passed", False):
        start_line.passed = True
        print("at the start line", flush=True)
        sys.stdin.readline()


sys.exit(main(["db", "upgrade"], prog_name="ueoz-migration"))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no upgrade has touched: an empty SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    server = postgres_url()
    name = f"ueoz_upgrade_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        server.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def start_upgrade(database_url: str, tmp_path: Path, name: str) -> subprocess.Popen[str]:
    environ = os.environ | {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "INSTANCE_DIR": str(tmp_path / name),
        "AUDIT_KEY": TEST_KEY,
        "SECRET_KEY": "test-secret",
    }
    return subprocess.Popen(
        [sys.executable, "-c", AT_THE_START_LINE],
        env=environ,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_upgrades_at_once_both_succeed_and_leave_the_schema_at_head(fresh_database, tmp_path):
    processes = [start_upgrade(fresh_database, tmp_path, name) for name in ("a", "b")]
    try:
        for process in processes:
            line = process.stdout.readline()
            assert line == "at the start line\n", line + process.communicate()[0]
        for process in processes:  # go
            process.stdin.write("\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    assert [process.returncode for process in processes] == [0, 0], outputs
    engine = make_engine(fresh_database)
    heads = ScriptDirectory.from_config(alembic_config(engine)).get_heads()
    for output in outputs:
        assert output.splitlines()[-1].startswith(f"database at {heads[0]} (head): "), output
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
        versions = connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()
        tables = set(inspect(connection).get_table_names())
    engine.dispose()
    assert (set(current), versions) == (set(heads), 1)
    assert {table.name for table in Base.metadata.sorted_tables} <= tables


def upgrade_command(database_url: str, tmp_path: Path, *args: str):
    environ = {"APP_ENV": "test", "DATABASE_URL": database_url, "INSTANCE_DIR": str(tmp_path)}
    return CliRunner().invoke(main, ["db", "upgrade", *args], env=environ)


def test_an_upgrade_to_a_revision_behind_the_database_says_nothing_was_done(
    fresh_database, tmp_path
):
    engine = make_engine(fresh_database)
    where = engine.url.render_as_string()
    (head,) = ScriptDirectory.from_config(alembic_config(engine)).get_heads()
    engine.dispose()
    assert upgrade_command(fresh_database, tmp_path, "0002").stdout == (
        f"database at 0002: {where}\n"
    )
    assert upgrade_command(fresh_database, tmp_path).stdout == (
        f"database at {head} (head): {where}\n"
    )

    behind = upgrade_command(fresh_database, tmp_path, "0002")

    assert behind.exit_code == 0
    assert behind.stdout == (
        f"database at {head} (head), past 0002: nothing done (db upgrade never downgrades): "
        f"{where}\n"
    )


def test_an_unknown_revision_is_a_usage_error_naming_the_known_ones(tmp_path):
    database = tmp_path / "x.sqlite3"
    scripts = ScriptDirectory.from_config(alembic_config(make_engine(f"sqlite:///{database}")))
    known = ", ".join(sorted(script.revision for script in scripts.walk_revisions()))

    result = upgrade_command(f"sqlite:///{database}", tmp_path, "nosuch")

    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        f"Error: Invalid value for REVISION: no revision 'nosuch' (this release has {known}, "
        "and head)"
    )
    assert known.startswith("0001, 0002, 0003")
    assert not database.exists()


def test_a_command_on_a_database_never_upgraded_says_so_in_one_line(tmp_path):
    environ = {"APP_ENV": "test", "INSTANCE_DIR": str(tmp_path), "AUDIT_KEY": "k" * 32}

    for command in (["mail-sender", "--once"], ["worker", "--once"], ["eploz", "seed-demo"]):
        result = CliRunner().invoke(main, command, env=environ)

        assert result.exit_code == 1, command
        (line,) = result.output.splitlines()
        assert line.startswith("Error: cannot "), command
        assert "no such table" in line and "ueoz-migration db upgrade" in line, command


def test_upgrading_an_unreachable_database_says_so_in_one_line(tmp_path):
    environ = {
        "APP_ENV": "test",
        "INSTANCE_DIR": str(tmp_path),
        "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/ueoz?connect_timeout=2",
    }

    result = CliRunner().invoke(main, ["db", "upgrade"], env=environ)

    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith("Error: cannot upgrade the database (")
    assert line.endswith("is it reachable?")
