"""Engines and transactions for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, connect_wait: float = 0.0, **kwargs: object) -> Engine:
    """Create an engine; on SQLite, make every transaction take the write lock up front.

    ``connect_wait``: on PostgreSQL, how long a new connection is tried again while the server
    refuses it (a restart, a failover), before the request fails as the outage it is.

    pysqlite starts transactions lazily and in DEFERRED mode, so two processes that both read
    an attempt and then write it would deadlock or overwrite each other. ``BEGIN IMMEDIATE``
    serialises writers at the start of the transaction instead: the second one waits (up to the
    busy timeout), then reads the state the first one committed. PostgreSQL gets the same
    guarantee from ``SELECT … FOR UPDATE`` on the attempt row.
    """
    # A database error's message never lists the statement's parameters: they hold PESELs
    # and e-mail addresses, and such messages end up in logs and on terminals.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)  # type: ignore[arg-type]
        path = make_url(url).database

        @event.listens_for(engine, "do_connect")
        def _create(_dialect, _record, _args, _params):  # type: ignore[no-untyped-def]
            _create_for_owner_only(path)  # then the driver connects as ever

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection):  # type: ignore[no-untyped-def]
            if connection.get_execution_options().get(READ_ONLY):
                # WAL gives a reader a snapshot without the write lock; it waits for no one.
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # Pre-ping costs one round trip (``SELECT 1``) when a transaction takes a pooled
    # connection: ~0.17 ms on loopback, 2–4 % of a transition's ~4 ms of ORM and state work
    # (docs/performance.md, Core). Without it, the first request on each pooled
    # connection after a database restart or failover fails with an error page; with it, the
    # pool reconnects unseen. Worth its round trip. psycopg prepares a statement on the
    # server after its fifth use on a connection by itself, so the hot ones are prepared.
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
    if connect_wait > 0:
        _wait_for_the_server(engine, connect_wait)
    return engine


def _wait_for_the_server(engine: Engine, seconds: float) -> None:
    """Try a refused connection again, at growing intervals, for up to ``seconds``.

    A PostgreSQL restart takes a few seconds; the pool notices its dead connections (pre-ping)
    and opens new ones, which the server refuses until it is up. Waiting here rides the
    restart out: the person's request takes longer instead of ending on the error page. The
    database's own errors (a wrong password, no such database) fail at once, as before.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        pause = 0.05
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as error:
                if not _refused(error) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)


def _refused(error: BaseException) -> bool:
    """Whether psycopg could not reach the server at all (it says so in no SQLSTATE)."""
    return getattr(error, "sqlstate", None) is None or str(error.sqlstate).startswith("57P03")


def _create_for_owner_only(path: str | None) -> None:
    """Create a new SQLite file readable and writable by its owner only (0600).

    It holds PESELs, names and addresses; SQLite itself would create it as the umask lets
    (often 0644, readable by every user of the machine), and gives its -wal and -shm files
    the database file's permissions. An empty file is an empty database.
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    # Already there, or no folder yet (SQLite says so when it opens it): nothing to do.
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def shown_url(engine: Engine) -> str:
    """The engine's database address, fit to print: no password, wherever it was given.

    SQLAlchemy hides the ``user:password@`` one; libpq also takes ``?password=…`` (and
    ``sslpassword``), which it would print in clear.
    """
    url = engine.url
    hidden = "hidden0password"  # stands in while rendering, which would encode "***"
    secret = {name: hidden for name in url.query if "password" in name.lower()}
    shown = url.update_query_dict(secret).render_as_string(hide_password=True)
    return shown.replace(hidden, "***")


#: Execution option of a connection that only reads (see :func:`snapshot`).
READ_ONLY = "ueoz_read_only"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """Run a unit of work: commit when the block ends, roll everything back on any error."""
    with sessions() as session, session.begin():
        yield session


@contextmanager
def snapshot(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """Read one consistent snapshot; on SQLite without queueing behind writers for their lock.

    Only for reads: a write in it would have to upgrade the lock and may fail at once with
    "database is locked" instead of waiting. PostgreSQL reads the same either way.
    """
    with sessions() as session:
        options: dict[str, object] = {READ_ONLY: True}
        if session.get_bind().dialect.name == "postgresql":
            # One snapshot for every statement, as SQLite's WAL reader gets: an auditor's
            # pass must not see a transition's log row without its attempt, or the reverse.
            options["isolation_level"] = "REPEATABLE READ"
        session.connection(execution_options=options)
        yield session
