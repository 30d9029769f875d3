"""Fixtures shared by the whole suite: settings, a migrated database on SQLite or PostgreSQL.

Every test that takes ``services`` runs twice, once per database. PostgreSQL is the server
that ``make test`` and ``.ci/run`` start (``scripts/postgres.sh``); its address comes in
``TEST_POSTGRES_URL``. Each test gets empty tables: SQLite a copy of a migrated file,
PostgreSQL a truncation of a database migrated once per test process.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ueoz_migration.bootstrap import Services
from ueoz_migration.config import Settings
from ueoz_migration.db.engine import make_engine
from ueoz_migration.db.models import Base
from ueoz_migration.db.schema import upgrade

TEST_KEY = "test-audit-key-0123456789abcdef"
TEST_PESEL_KEY = "test-pesel-hash-key-not-the-audit-key"


def postgres_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        raise pytest.UsageError(
            "TEST_POSTGRES_URL is not set: run the suite with `make test`, which starts "
            "PostgreSQL on loopback (scripts/postgres.sh) and sets it."
        )
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ueoz.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@contextmanager
def migrated_postgres_database(name: str) -> Iterator[str]:
    """A new database ``name`` on the test server, at the current schema; dropped after."""
    server = postgres_url()
    admin = create_engine(
        server.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    worker_id = getattr(request.config, "workerinput", {}).get("workerid", "main")
    with migrated_postgres_database(f"ueoz_test_{worker_id}_{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "ueoz.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_database")
    yield url
    engine = make_engine(url)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


def make_settings(tmp_path: Path, database_url: str, **overrides: str) -> Settings:
    environ = {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "SECRET_KEY": "test-secret",
        "AUDIT_KEY": TEST_KEY,
        "PESEL_HASH_KEY": TEST_PESEL_KEY,
        "BASE_URL": "http://localhost",
        "MAILDIR_PATH": str(tmp_path / "maildir"),
        **overrides,
    }
    return Settings.from_env(environ)


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """The test settings; a test sets some of its own with ``indirect=True`` parametrization."""
    return make_settings(tmp_path, database_url, **getattr(request, "param", {}))


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = Services(settings)
    yield services
    services.engine.dispose()
