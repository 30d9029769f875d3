"""Benchmark the core: persisted transitions per second, and audit replay/verify over a big log.

Run it from the repository root (``make bench`` does):

    .venv/bin/python benchmarks/bench_core.py \
        --database-url sqlite --database-url postgresql://postgres@127.0.0.1:55433/postgres \
        --transitions 1500 --processes 2 --rounds 3 --log-rows 100000

``sqlite`` means a fresh SQLite file in a temporary folder. For a PostgreSQL URL the script
creates a throw-away database on that server, migrates it, and drops it at the end.

- *fire*: each attempt is started, then driven through ``Journey.fire`` along a real path
  (search_failed → continue_new → submit → change_email → submit → expire): event numbers
  are minted, UEOZ accounts saved, verification e-mails put in the outbox. Each fire is one
  transaction with its log row. With ``--processes N`` (N > 1, PostgreSQL only) N processes
  fire at once, each on its own attempts; the figure is all their transitions over the wall
  time.
- *floor*: what the fixed parts cost alone, with none of our behaviours and no ORM: per
  transition, one SQLAlchemy Core transaction (lock and read the attempt, update its state
  and chain head, insert its chained log row) and one ``send`` of python-statemachine on a
  machine of the flow whose behaviours do nothing (``submit`` and ``change_email`` in
  turn), its three statements built once. No transition of ours can be cheaper than this;
  it bounds what the aim asks of the design, whichever way the states are written.
- *replay* and *verify*: a log of ``--log-rows`` rows is written in bulk by
  :func:`write_bulk_log`, which chains rows with the same code as the journey
  (``audit.chain.link_hash``) along paths of the flow's own transition table, with refused
  and rejected events among them; then ``replay_log`` and ``verify_chain`` read it all.
  ``verify_chain`` runs in one process and split over one process a CPU; the table marks the
  split the CLI chooses (``default_processes``: one a CPU).

Every figure is the median of ``--rounds`` rounds. Only the Markdown table goes to stdout
(``make bench`` puts it into docs/performance.md); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import bindparam, create_engine, func, insert, select, text, update

from ueoz_migration.audit.chain import GENESIS, link_hash
from ueoz_migration.audit.replay import replay_log
from ueoz_migration.audit.verify import MAX_PROCESSES, default_processes, verify_chain
from ueoz_migration.bootstrap import Services
from ueoz_migration.config import Settings
from ueoz_migration.db.engine import make_engine, transaction
from ueoz_migration.db.models import Attempt, FlowVersion, TransitionLogEntry
from ueoz_migration.db.schema import upgrade
from ueoz_migration.domain.identity import Person
from ueoz_migration.domain.privacy import pesel_hash
from ueoz_migration.flow import Flow
from ueoz_migration.journey import Actor
from ueoz_migration.states import AttemptModel, StateBehaviour

AUDIT_KEY = "bench-audit-key-0123456789abcdef"
FIRE_PATH = (
    ("search_failed", {"code": 201}),
    ("continue_new", {}),
    (
        "submit",
        {"email": "bench@example.pl", "email_repeat": "bench@example.pl", "terms_accepted": True},
    ),
    ("change_email", {}),
    (
        "submit",
        {"email": "bench2@example.pl", "email_repeat": "bench2@example.pl", "terms_accepted": True},
    ),
    ("expire", {}),
)


def quiet_logs() -> None:
    """Render log lines as production does (JSON), but into /dev/null, not the terminal."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=open(os.devnull, "w")),  # noqa: SIM115
        cache_logger_on_first_use=True,
    )


# -- databases -----------------------------------------------------------------------------


@dataclass
class Database:
    label: str
    url: str
    drop: Callable[[], None]


def prepare_database(spec: str, folder: Path) -> Database:
    """Create and migrate a throw-away database for ``spec`` (``sqlite`` or a PostgreSQL URL)."""
    if spec == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.sqlite3"
        url = f"sqlite:///{path}"
        drop = lambda: path.unlink(missing_ok=True)  # noqa: E731
        label = "SQLite"
    else:
        name = f"ueoz_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(
            spec.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = spec.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()

        label = "PostgreSQL"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return Database(label, url, drop)


def services_for(url: str, folder: Path) -> Services:
    return Services(
        Settings.from_env(
            {
                "APP_ENV": "bench",
                "DATABASE_URL": url,
                "AUDIT_KEY": AUDIT_KEY,
                "SECRET_KEY": "bench",
                "INSTANCE_DIR": str(folder / "instance"),
                "RESEND_LIMIT_PER_HOUR": "100",
            }
        )
    )


# -- fire: transitions through the journey ---------------------------------------------------


def person(prefix: int, index: int) -> Person:
    return Person("Bench", "Person", None, f"{prefix:02d}{index:09d}")


def fire_worker(url: str, folder: str, prefix: int, transitions: int, start_at: float) -> float:
    """Fire ``transitions`` events at fresh attempts; return the seconds it took."""
    quiet_logs()
    services = services_for(url, Path(folder))
    journey = services.journey
    actor = Actor("user", "bench")
    journey.start(person(prefix, 999_999_999), actor=actor)  # warm up: flow recorded, pool open
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.perf_counter()
    fired, index = 0, 0
    while fired < transitions:
        attempt = journey.start(person(prefix, index), actor=actor)
        index += 1
        for event, data in FIRE_PATH:
            journey.fire(attempt.id, event, actor=actor, **data)
            fired += 1
            if fired == transitions:
                break
    seconds = time.perf_counter() - started
    services.engine.dispose()
    return seconds


def bench_fire(db: Database, folder: Path, transitions: int, processes: int, round_: int) -> float:
    """Return persisted transitions per second, all processes together."""
    if processes == 1:
        return transitions / fire_worker(db.url, str(folder), round_ * 10, transitions, 0)
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # every process connected and warmed up by then
    with context.Pool(processes) as pool:
        results = [
            pool.apply_async(
                fire_worker, (db.url, str(folder), round_ * 10 + n, transitions, start_at)
            )
            for n in range(processes)
        ]
        seconds = [result.get() for result in results]
    return transitions * processes / max(seconds)


# -- floor: the fixed libraries alone ---------------------------------------------------------


def no_op_machine(flow: Flow):  # type: ignore[no-untyped-def]
    """A machine of the flow whose every behaviour does nothing, and its model."""
    names = set(dir(AttemptModel)) - set(dir(StateBehaviour))
    model_class = type(
        "NoOpModel",
        (),
        {name: lambda self, *args, **kwargs: None for name in names if not name.startswith("_")},
    )
    model = model_class()
    model.state = None
    return flow.machine_class(model=model), model


def floor_worker(url: str, folder: str, transitions: int) -> float:
    """Run ``transitions`` bare persisted transitions; return the seconds they took."""
    quiet_logs()
    services = services_for(url, Path(folder))
    actor = Actor("user", "bench")
    attempt_id = services.journey.start(person(99, 1), actor=actor).id
    machine, model = no_op_machine(services.flow)
    attempts, log = Attempt.__table__, TransitionLogEntry.__table__
    key, version = services.settings.audit_key, services.flow.version
    events = (("email_entry", "submit"), ("awaiting_verification", "change_email"))
    # Built once, as the journey's are: building a statement costs more than running it.
    lock = (
        select(attempts.c.log_seq, attempts.c.log_head, attempts.c.pesel_hash)
        .where(attempts.c.id == bindparam("attempt"))
        .with_for_update()
    )
    move = (
        update(attempts)
        .where(attempts.c.id == bindparam("attempt"))
        .values(
            state=bindparam("state"),
            log_seq=bindparam("seq"),
            log_head=bindparam("head"),
            updated_at=bindparam("now"),
        )
    )
    append = insert(log)
    started = time.perf_counter()
    for n in range(transitions):
        source, event = events[n % 2]
        model.state = source
        machine.send(event)
        now = datetime.now(UTC)
        with services.engine.begin() as connection:
            row = connection.execute(lock, {"attempt": attempt_id}).one()
            fields = {
                "attempt_id": attempt_id,
                "seq": row.log_seq + 1,
                "at": now,
                "event": event,
                "source": source,
                "target": model.state,
                "outcome": "applied",
                "actor": "user",
                "request_id": "bench",
                "flow_version": version,
                "event_number": None,
                "event_code": None,
                "pesel_hash": row.pesel_hash,
                "detail": "",
            }
            digest = link_hash(key, row.log_head, fields)
            connection.execute(
                move,
                {
                    "attempt": attempt_id,
                    "state": model.state,
                    "seq": fields["seq"],
                    "head": digest,
                    "now": now,
                },
            )
            connection.execute(append, {**fields, "prev_hash": row.log_head, "hash": digest})
    seconds = time.perf_counter() - started
    services.engine.dispose()
    return seconds


# -- replay and verify over a bulk-written log -------------------------------------------------

# Paths through the flow: (event, outcome, extra detail). Refused and rejected events too.
BULK_PATHS = (
    (
        ("account_found", "applied"),
        ("create_account", "applied"),
        ("submit", "rejected"),
        ("submit", "applied"),
        ("resend", "applied"),
        ("verify", "rejected"),
        ("verify", "applied"),
    ),
    (
        ("search_failed", "applied"),
        ("verify", "refused"),
        ("continue_new", "applied"),
        ("submit", "applied"),
        ("change_email", "applied"),
        ("submit", "applied"),
        ("expire", "applied"),
    ),
    (("cancel", "applied"),),
    (("skip", "applied"), ("cancel", "refused")),
)
DETAILS = {
    ("submit", "applied"): json.dumps({"email": "b***@example.pl"}),
    ("resend", "applied"): json.dumps({"email": "b***@example.pl"}),
    ("submit", "rejected"): json.dumps({"reason": "invalid_submission"}),
    ("verify", "rejected"): json.dumps({"reason": "link_expired"}),
    ("verify", "refused"): json.dumps({"reason": "not_allowed"}),
    ("cancel", "refused"): json.dumps({"reason": "not_allowed"}),
}


def write_bulk_log(services: Services, rows_wanted: int) -> int:
    """Write attempts and their chained logs, as the journey would have; return the rows written.

    Each row goes through the same :func:`link_hash` with the same fields as
    ``Journey._append``; targets come from the flow's transition table, so replay and verify
    must both pass on the result.
    """
    flow: Flow = services.flow
    key = services.settings.audit_key
    now = datetime.now(UTC)
    with services.sessions() as session:  # written in parts: go on from the last number
        highest = session.scalar(select(func.max(Attempt.event_number)))
    number = int(highest.removeprefix("MIGRATION_")) if highest else 10**11
    attempts: list[dict] = []
    rows: list[dict] = []
    written = 0
    with transaction(services.sessions) as session:
        if session.get(FlowVersion, flow.version) is None:
            session.add(
                FlowVersion(
                    version=flow.version, name=flow.name, source=flow.source, first_used_at=now
                )
            )
    while written < rows_wanted:
        for path in BULK_PATHS:
            attempt_id = uuid.uuid4().hex
            pesel = f"9{len(attempts) + written:010d}"
            hashed = pesel_hash(services.settings.pesel_key, pesel)
            state, head, seq, event_number, event_code = flow.initial, GENESIS, 0, None, None
            steps = (("start", "applied"), *path)
            for event, outcome in steps:
                seq += 1
                now += timedelta(microseconds=137)
                source = "" if event == "start" else state
                minted = False
                if outcome == "applied" and event != "start":
                    state = flow.transitions[(state, event)]
                    if state == "error":
                        number += 1
                        event_number, event_code, minted = f"MIGRATION_{number:012d}", 201, True
                fields = {
                    "attempt_id": attempt_id,
                    "seq": seq,
                    "at": now,
                    "event": event,
                    "source": source,
                    "target": state,
                    "outcome": outcome,
                    "actor": "user",
                    "request_id": uuid.uuid4().hex,
                    "flow_version": flow.version,
                    "event_number": event_number if minted else None,
                    "event_code": event_code if minted else None,
                    "pesel_hash": hashed,
                    "detail": DETAILS.get((event, outcome), ""),
                }
                digest = link_hash(key, head, fields)
                rows.append({**fields, "prev_hash": head, "hash": digest})
                head = digest
            written += seq
            attempts.append(
                {
                    "id": attempt_id,
                    "state": state,
                    "flow_version": flow.version,
                    "pesel": pesel,
                    "pesel_hash": hashed,
                    "given_names": "Bench",
                    "family_name": "Person",
                    "date_of_birth": None,
                    "open_pesel_key": None,
                    "event_number": event_number,
                    "event_code": event_code,
                    "language": "pl",
                    "created_at": now,
                    "updated_at": now,
                    "expires_at": now,
                    "search_tries": 0,
                    "log_seq": seq,
                    "log_head": head,
                }
            )
            if len(rows) >= 20_000 or written >= rows_wanted:
                _flush(services, attempts, rows)
            if written >= rows_wanted:
                break
    _flush(services, attempts, rows)
    return written


def _flush(services: Services, attempts: list[dict], rows: list[dict]) -> None:
    if not rows:
        return
    with services.engine.begin() as connection:
        connection.execute(insert(Attempt.__table__), attempts)
        connection.execute(insert(TransitionLogEntry.__table__), rows)
    attempts.clear()
    rows.clear()


def bench_audit(services: Services, processes: list[int]) -> tuple[float, list[float]]:
    """Return the seconds of replay, and of verify in each number of processes."""
    with services.sessions() as session:
        replayed = replay_log(session)
    reports = [replayed]
    for count in processes:
        with services.sessions() as session:
            reports.append(verify_chain(session, services.settings.audit_key, processes=count))
    for report in reports:
        if not report.ok:
            raise SystemExit(f"the bulk log does not pass {report.check}: {report.first}")
    return replayed.seconds, [report.seconds for report in reports[1:]]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the report -------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        action="append",
        dest="urls",
        help="'sqlite' or a PostgreSQL server URL; repeat for several (default: sqlite)",
    )
    parser.add_argument(
        "--transitions",
        type=int,
        default=3000,
        help="transitions fired per process per round (default 3000)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes for the concurrent PostgreSQL figure (default 2)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (default 3)")
    parser.add_argument(
        "--log-rows",
        type=int,
        default=100_000,
        help="rows in the log that replay and verify read (default 100000)",
    )
    args = parser.parse_args(argv)
    quiet_logs()

    table = []
    with tempfile.TemporaryDirectory(prefix="ueoz-bench-") as tmp:
        folder = Path(tmp)
        for spec in args.urls or ["sqlite"]:
            db = prepare_database(spec, folder)
            try:
                services = services_for(db.url, folder)
                configs = [1]
                if db.label == "PostgreSQL" and args.processes > 1:
                    configs.append(args.processes)
                for processes in configs:
                    rates = []
                    for round_ in range(args.rounds):
                        rates.append(
                            bench_fire(
                                db, folder, args.transitions, processes, round_ + processes * 3
                            )
                        )
                        progress(f"{db.label} fire, {processes} process(es): {rates[-1]:,.0f}/s")
                    table.append(
                        (
                            db.label,
                            f"fire, {processes} process(es)",
                            "transitions/s",
                            median(rates),
                            rates,
                        )
                    )
                rates = []
                for _ in range(args.rounds):
                    rates.append(
                        args.transitions / floor_worker(db.url, str(folder), args.transitions)
                    )
                    progress(f"{db.label} floor, 1 process: {rates[-1]:,.0f}/s")
                table.append(
                    (
                        db.label,
                        "floor: Core + python-statemachine alone, 1 process",
                        "transitions/s",
                        median(rates),
                        rates,
                    )
                )
                services.engine.dispose()
                # The audit figures run on a database of their own, holding only the bulk log.
                db.drop()
                db = prepare_database(spec, folder)
                services = services_for(db.url, folder)
                rows = write_bulk_log(services, args.log_rows)
                cli = default_processes(services.engine.url, rows)  # as the CLI verifies
                counts = sorted({1, cli, min(len(os.sched_getaffinity(0)), MAX_PROCESSES)})
                replays: list[float] = []
                verifies: dict[int, list[float]] = {count: [] for count in counts}
                for _ in range(args.rounds):
                    replay_s, verify_s = bench_audit(services, counts)
                    replays.append(replay_s)
                    for count, seconds in zip(counts, verify_s, strict=True):
                        verifies[count].append(seconds)
                    shown = ", ".join(
                        f"{seconds:.3f} s ({count} proc.)"
                        for count, seconds in zip(counts, verify_s, strict=True)
                    )
                    progress(f"{db.label} replay {replay_s:.3f} s, verify {shown}")
                table.append((db.label, f"replay {rows:,} rows", "s", median(replays), replays))
                for count in counts:
                    measure = f"verify {rows:,} rows, {count} process(es)"
                    if count == cli:
                        measure += " (the CLI's choice)"
                    table.append((db.label, measure, "s", median(verifies[count]), verifies[count]))
                services.engine.dispose()
            finally:
                db.drop()

    aims = {"transitions/s": 1000.0, "s": None}
    progress(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.rounds} rounds, median shown, load average {os.getloadavg()[0]:.2f}"
    )
    print("| database | measure | median | unit | rounds | aim | median / aim |")
    print("|---|---|---:|---|---|---:|---:|")
    for label, measure, unit, value, rounds in table:
        aim = aims[unit]
        if unit == "s":
            aim = 5.0 if measure.startswith("replay") else 1.0
            ratio = f"{value / aim:.2f} (≤ 1 meets it)"
        else:
            ratio = f"{value / aim:.2f} (≥ 1 meets it)"
        shown = ", ".join(f"{r:,.0f}" if unit != "s" else f"{r:.3f}" for r in rounds)
        number = f"{value:,.0f}" if unit != "s" else f"{value:.3f}"
        print(f"| {label} | {measure} | {number} | {unit} | {shown} | {aim:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
