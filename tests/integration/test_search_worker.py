"""The search worker driving real attempts to `found` or `error`, on both databases."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from tests.clock import Clock
from tests.conftest import TEST_KEY, make_settings
from tests.factories import (
    ANNA,
    HERMEGILDA,
    CountedStop,
    add_eploz_account,
    down_first,
    log_of,
    search_worker,
    user,
)
from ueoz_migration.adapters.eploz import DirectoryUnavailable, TableDirectory
from ueoz_migration.bootstrap import Services
from ueoz_migration.db.engine import make_engine, make_sessionmaker, transaction
from ueoz_migration.db.models import Attempt, EplozAccount, UeozAccount
from ueoz_migration.demo import DEMO_PEOPLE, seed_demo
from ueoz_migration.domain.identity import Person
from ueoz_migration.domain.privacy import pesel_hash

EVENT_NUMBER = re.compile(r"MIGRATION_\d{12}")


def start(services, person=ANNA):
    return services.journey.start(person, actor=user())


def person(number: int) -> Person:
    """A person with a valid PESEL of their own (born 1990-01-01)."""
    from stdnum.pl import pesel

    base = f"900101{number:04d}"
    return Person("Jan", "Testowy", date(1990, 1, 1), base + pesel.calc_check_digit(base))


def give_ueoz_account(services, owner: Person, eploz_id: int, *, verified: bool) -> None:
    now = datetime.now(UTC)
    with transaction(services.sessions) as session:
        session.add(
            UeozAccount(
                pesel=owner.pesel,
                pesel_hash=pesel_hash(services.settings.pesel_key, owner.pesel),
                given_names=owner.given_names,
                family_name=owner.family_name,
                email="someone@example.pl",
                email_verified_at=now if verified else None,
                eploz_account_id=eploz_id,
                created_at=now,
            )
        )


class FailingDirectory:
    """An e-PLOZ that is down for the first ``failures`` questions, then the real table."""

    def __init__(self, services, failures: int = 10**6) -> None:
        self.table = TableDirectory(services.sessions)
        self.failures = failures
        self.asked = 0

    def accounts_by_pesel(self, pesel):
        self.asked += 1
        if self.asked <= self.failures:
            raise DirectoryUnavailable("e-PLOZ answered 503")
        return self.table.accounts_by_pesel(pesel)

    def is_migrated_elsewhere(self, account_id, pesel_hash):
        return self.table.is_migrated_elsewhere(account_id, pesel_hash)


# -- outcomes -----------------------------------------------------------------------------


def test_the_matching_account_is_found(services):
    eploz_id = add_eploz_account(services)
    attempt = start(services)

    report = search_worker(services).run_once()

    attempt = services.journey.get(attempt.id)
    assert (report.found, attempt.state, attempt.eploz_account_id) == (1, "found", eploz_id)
    assert (attempt.event_number, attempt.event_code) == (None, None)
    last = log_of(services, attempt.id)[-1]
    assert (last.event, last.source, last.target, last.actor) == (
        "account_found",
        "searching",
        "found",
        "worker",
    )


def _eploz_rows(services, case):
    """Put in the directory what each branch needs for ANNA; return nothing."""
    if case == 202:
        add_eploz_account(services, first_name="Maria")
    elif case == 203:
        add_eploz_account(services, last_name="Mickiewicz")
    elif case == 204:
        add_eploz_account(services)
        add_eploz_account(services, login="amicsokol2")
    elif case == 205:
        add_eploz_account(services, status="blocked")
    elif case == 206:
        give_ueoz_account(services, person(1), add_eploz_account(services), verified=True)
    elif case == 208:
        add_eploz_account(services, first_name="Helena", last_name="Grabowska")


@pytest.mark.parametrize("code", [201, 202, 203, 204, 205, 206, 208])
def test_each_failed_search_ends_in_error_with_its_code_and_an_event_number(services, code):
    _eploz_rows(services, code)
    attempt = start(services)

    report = search_worker(services).run_once()

    attempt = services.journey.get(attempt.id)
    assert report.failed == {code: 1}
    assert (attempt.state, attempt.event_code) == ("error", code)
    assert EVENT_NUMBER.fullmatch(attempt.event_number)
    last = log_of(services, attempt.id)[-1]
    assert (last.event, last.target, last.actor) == ("search_failed", "error", "worker")
    assert (last.event_number, last.event_code) == (attempt.event_number, code)


def test_the_manuals_hermegilda_gets_208(services):
    add_eploz_account(
        services,
        login="hgrabowska",
        pesel=HERMEGILDA.pesel,
        first_name="Helena",
        last_name="Grabowska",
    )
    attempt = start(services, HERMEGILDA)

    search_worker(services).run_once()

    assert services.journey.get(attempt.id).event_code == 208


def test_the_persons_own_unverified_ueoz_account_is_not_elsewhere(services):
    # An earlier attempt created the UEOZ account, then expired before the e-mail was
    # confirmed: the person may take the e-PLOZ account over again.
    eploz_id = add_eploz_account(services)
    give_ueoz_account(services, ANNA, eploz_id, verified=False)
    attempt = start(services)

    search_worker(services).run_once()

    assert services.journey.get(attempt.id).state == "found"


def test_another_persons_unverified_ueoz_account_is_elsewhere(services):
    give_ueoz_account(services, person(2), add_eploz_account(services), verified=False)
    attempt = start(services)

    search_worker(services).run_once()

    assert services.journey.get(attempt.id).event_code == 206


def test_an_attempt_cancelled_during_the_search_stays_cancelled(services):
    add_eploz_account(services)
    attempt = start(services)

    class CancellingDirectory(TableDirectory):
        def accounts_by_pesel(self, pesel):
            services.journey.fire(attempt.id, "cancel", actor=user())  # the person, meanwhile
            return super().accounts_by_pesel(pesel)

    report = search_worker(services, CancellingDirectory(services.sessions)).run_once()

    assert (report.superseded, report.found) == (1, 0)
    assert services.journey.get(attempt.id).state == "cancelled"


def test_the_worker_logs_the_pesel_masked(services):
    add_eploz_account(services)
    start(services)

    with capture_logs() as logs:
        search_worker(services).run_once()

    found = [entry for entry in logs if entry["event"] == "search.found"]
    assert found and found[0]["pesel"] == "********342"
    assert ANNA.pesel not in repr(logs)


# -- an unavailable directory -------------------------------------------------------------


def test_a_failing_directory_is_retried_with_backoff_then_gives_up_with_207(tmp_path, database_url):
    services = Services(
        make_settings(tmp_path, database_url, SEARCH_MAX_TRIES="3", SEARCH_RETRY_BASE_SECONDS="10")
    )
    attempt = start(services)
    clock = Clock()
    directory = FailingDirectory(services)
    worker = search_worker(services, directory, clock=clock)

    first = worker.run_once()
    assert (first.retried, services.journey.get(attempt.id).state) == (1, "searching")
    assert services.journey.get(attempt.id).search_due_at == clock.now + timedelta(seconds=10)

    clock.advance(seconds=9)
    assert worker.run_once().searched == 0  # not due yet: no one asks e-PLOZ

    clock.advance(seconds=1)
    assert worker.run_once().retried == 1
    assert services.journey.get(attempt.id).search_due_at == clock.now + timedelta(seconds=20)

    clock.advance(seconds=20)
    last = worker.run_once()

    attempt = services.journey.get(attempt.id)
    assert (last.failed, directory.asked, attempt.search_tries) == ({207: 1}, 3, 3)
    assert (attempt.state, attempt.event_code) == ("error", 207)
    assert EVENT_NUMBER.fullmatch(attempt.event_number)
    services.engine.dispose()


def reader_that_never_waits_for_a_lock(database_url):
    """Sessions of another process whose every wait for a lock fails at once.

    SQLite: no busy timeout, so a reader queued for the write lock gets "database is
    locked"; PostgreSQL: a lock timeout of 1 ms, so a reader queued behind a row lock fails.
    """
    if database_url.startswith("sqlite"):
        engine = make_engine(database_url)

        @event.listens_for(engine, "connect")
        def _no_busy_wait(dbapi_connection, _record):
            dbapi_connection.execute("PRAGMA busy_timeout=0")

    else:
        engine = make_engine(database_url, connect_args={"options": "-c lock_timeout=1"})
    return engine, make_sessionmaker(engine)


def test_the_directory_is_read_while_another_process_writes(services, database_url):
    # An `eploz import` or any long transaction holds SQLite's write lock (or, on
    # PostgreSQL, the rows): the search reads the last committed state and does not wait.
    # The reader fails at once if it queues for a lock, so not waiting is what passes.
    eploz_id = add_eploz_account(services)
    engine, sessions = reader_that_never_waits_for_a_lock(database_url)
    directory = TableDirectory(sessions)
    try:
        with transaction(services.sessions) as writer:
            writer.execute(
                update(EplozAccount)
                .where(EplozAccount.id == eploz_id)
                .values(email="changed@example.pl")
            )
            (account,) = directory.accounts_by_pesel(ANNA.pesel)
            elsewhere = directory.is_migrated_elsewhere(eploz_id, "0" * 64)
    finally:
        engine.dispose()

    assert (account.id, account.email, elsewhere) == (eploz_id, "amicsokol@csioz.pl", False)


def test_a_directory_that_comes_back_finds_the_account(services):
    add_eploz_account(services)
    attempt = start(services)
    clock = Clock()
    worker = search_worker(services, FailingDirectory(services, failures=1), clock=clock)

    worker.run_once()
    clock.advance(services.settings.search_retry_base)
    worker.run_once()

    assert services.journey.get(attempt.id).state == "found"


def test_a_directory_slower_than_the_timeout_counts_as_unavailable(tmp_path, database_url):
    services = Services(
        make_settings(tmp_path, database_url, SEARCH_MAX_TRIES="1", SEARCH_TIMEOUT_SECONDS="0.2")
    )
    released = threading.Event()
    answered = threading.Event()

    class HangingDirectory(TableDirectory):
        def accounts_by_pesel(self, pesel):
            released.wait(60)  # until the test is done with the worker (60 s: a safety net)
            answered.set()
            return []

    attempt = start(services)
    try:
        with capture_logs() as logs:
            report = search_worker(services, HangingDirectory(services.sessions)).run_once()
        # The worker gave up and recorded 207 while the directory was still hanging.
        answered_before_the_outcome = answered.is_set()
    finally:
        released.set()

    assert not answered_before_the_outcome
    assert report.failed == {207: 1}
    assert services.journey.get(attempt.id).event_code == 207
    failures = [entry for entry in logs if entry["event"] == "search.directory_failed"]
    assert [entry["error"] for entry in failures] == ["TimeoutError"]
    services.engine.dispose()


def test_a_hung_directory_never_keeps_more_than_a_few_look_ups_running(tmp_path, database_url):
    # Each timed-out look-up is left running (and holds a pooled connection): while e-PLOZ
    # hangs, the worker stops starting new ones and fails those searches at once instead.
    from ueoz_migration.workers.search import MAX_HUNG_LOOKUPS

    services = Services(
        make_settings(tmp_path, database_url, SEARCH_MAX_TRIES="1", SEARCH_TIMEOUT_SECONDS="0.2")
    )
    released = threading.Event()
    running: list[str] = []

    class HangingDirectory(TableDirectory):
        def accounts_by_pesel(self, pesel):
            running.append(pesel)
            released.wait(60)  # until the test is done with the worker (60 s: a safety net)
            return []

    attempts = [start(services, person(number)) for number in range(MAX_HUNG_LOOKUPS + 3)]
    try:
        with capture_logs() as logs:
            report = search_worker(services, HangingDirectory(services.sessions)).run_once()
        hung_at_most = len(running)
    finally:
        released.set()

    assert hung_at_most == MAX_HUNG_LOOKUPS
    assert report.failed == {207: len(attempts)}  # every search ended, none waits for ever
    errors = [entry["error"] for entry in logs if entry["event"] == "search.directory_failed"]
    assert errors == ["TimeoutError"] * MAX_HUNG_LOOKUPS + ["DirectoryUnavailable"] * 3
    services.engine.dispose()


# -- several workers ----------------------------------------------------------------------


def test_several_workers_never_search_one_attempt_twice(settings):
    people = [person(10 + index) for index in range(24)]
    setup = Services(settings)
    attempts = [start(setup, someone).id for someone in people]
    asked: Counter[str] = Counter()
    lock = threading.Lock()

    class CountingDirectory(TableDirectory):
        def accounts_by_pesel(self, pesel):
            with lock:
                asked[pesel] += 1
            time.sleep(0.01)  # widen the window in which a second claim could slip in
            return super().accounts_by_pesel(pesel)

    # Separate Services: separate engines and sessions, as two processes would have.
    workers = []
    for name in ("w1", "w2", "w3"):
        own = Services(settings)
        workers.append((own, search_worker(own, CountingDirectory(own.sessions), worker_id=name)))
    barrier = threading.Barrier(len(workers))
    reports = {}

    def run(own_worker):
        barrier.wait()
        reports[own_worker.worker_id] = own_worker.run_once()

    threads = [threading.Thread(target=run, args=(worker,)) for _, worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert set(asked.values()) == {1} and len(asked) == len(people)
    assert sum(report.failed.get(201, 0) for report in reports.values()) == len(people)
    for attempt_id in attempts:
        outcomes = [row.event for row in log_of(setup, attempt_id)]
        assert outcomes == ["start", "search_failed"]
    for own, _ in workers:
        own.engine.dispose()
    setup.engine.dispose()


def test_a_claimed_attempt_waits_for_its_lease_to_run_out(services):
    attempt = start(services)
    clock = Clock()
    crashed = search_worker(services, clock=clock)
    assert crashed.claim().attempt_id == attempt.id  # ... and the process dies here

    other = search_worker(services, clock=clock)
    assert other.claim() is None

    clock.advance(crashed.lease)
    report = other.run_once()

    assert report.failed == {201: 1}
    assert services.journey.get(attempt.id).search_tries == 2


def test_an_attempt_whose_workers_keep_dying_gives_up_with_207(tmp_path, database_url):
    services = Services(make_settings(tmp_path, database_url, SEARCH_MAX_TRIES="2"))
    attempt = start(services)
    clock = Clock()
    directory = FailingDirectory(services, failures=0)
    worker = search_worker(services, directory, clock=clock)
    for _ in range(2):  # two tries claimed, and each worker died before reporting back
        assert worker.claim() is not None
        clock.advance(worker.lease)

    report = worker.run_once()

    assert (report.failed, directory.asked) == ({207: 1}, 0)
    assert services.journey.get(attempt.id).event_code == 207
    services.engine.dispose()


# -- the loop -----------------------------------------------------------------------------


def test_the_loop_searches_expires_and_stops_when_asked(services):
    add_eploz_account(services)
    attempt = start(services)
    stale = start(services, HERMEGILDA)
    with transaction(services.sessions) as session:
        row = session.get(Attempt, stale.id)
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
        row.search_due_at = None  # keep the search away from it; only the sweep may end it
    stop = threading.Event()
    loop = threading.Thread(
        target=search_worker(services).run_forever, args=(stop,), kwargs={"poll_interval": 0.05}
    )
    loop.start()
    deadline = time.monotonic() + 10
    while services.journey.get(attempt.id).state == "searching" and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    loop.join(5)

    assert not loop.is_alive()
    assert services.journey.get(attempt.id).state == "found"
    assert services.journey.get(stale.id).state == "expired"


def test_the_loop_rides_out_a_database_error_and_searches_on(services):
    # The database fails over in the middle of a pass: the claim fails; the loop logs it,
    # waits and claims again, and the attempt is searched all the same.
    add_eploz_account(services)
    attempt = start(services)
    stop = threading.Event()
    settled = threading.Event()  # the attempt was searched, or the loop ended
    claims: list[str] = []

    with capture_logs() as logs:
        worker = search_worker(services)
        real_claim, real_process = worker.claim, worker.process

        def claim_failing_once():
            claims.append("failed" if not claims else "claimed")
            if len(claims) == 1:
                raise OperationalError(
                    "SELECT attempts …", {}, Exception("server closed the connection")
                )
            return real_claim()

        def process(claimed, report):
            real_process(claimed, report)
            settled.set()

        def run():
            try:
                worker.run_forever(stop, poll_interval=0.05)
            finally:
                settled.set()

        worker.claim, worker.process = claim_failing_once, process
        loop = threading.Thread(target=run)
        loop.start()
        try:
            settled.wait(60)  # a safety net: either comes within a few polls
        finally:
            stop.set()
            loop.join(60)

    assert not loop.is_alive()
    assert services.journey.get(attempt.id).state == "found"
    assert claims[:2] == ["failed", "claimed"]
    events = [entry["event"] for entry in logs]
    (error,) = [entry for entry in logs if entry["event"] == "worker.database_error"]
    assert (error["error"], error["log_level"]) == ("OperationalError", "error")
    assert "worker.pass_failed" not in events
    assert events.index("worker.database_error") < events.index("search.found")
    assert events[-1] == "worker.stopped"


def test_the_loop_backs_off_while_the_database_stays_down_and_logs_each_step(services):
    # The database is down for 8 passes, then back. Looking every 0.2 s throughout would log
    # a line five times a second; the loop waits longer each time instead, up to 5 s, logs
    # one line a wait, and is back to 0.2 s once the database answers.
    stop = CountedStop(waits=10)
    with capture_logs() as logs:
        worker = search_worker(services)
        worker.has_due = down_first(8, worker.has_due, "SELECT attempts …")
        worker.run_forever(stop, poll_interval=0.2)

    assert stop.waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 0.2, 0.2]
    errors = [entry for entry in logs if entry["event"] == "worker.database_error"]
    # 8 lines over the 21.2 s the database was down, where a line a look would be 106.
    assert [(entry["failures"], entry["retry_in_seconds"]) for entry in errors] == list(
        zip(range(1, 9), stop.waits[:8], strict=True)
    )
    assert {(entry["error"], entry["log_level"]) for entry in errors} == {
        ("OperationalError", "error")
    }
    (back,) = [entry for entry in logs if entry["event"] == "worker.database_recovered"]
    assert back["failures"] == 8


def test_an_attempt_that_cannot_move_is_logged_and_the_others_go_on(services):
    # An attempt whose flow version is nowhere to be found (its definition was never kept)
    # cannot take a step: neither its search outcome nor its expiry can be applied.
    add_eploz_account(services)
    broken = start(services, HERMEGILDA)
    with transaction(services.sessions) as session:
        session.get(Attempt, broken.id).flow_version = "f" * 64
    attempt = start(services)

    with capture_logs() as logs:
        report = search_worker(services).run_once()

    assert (report.found, report.broken) == (1, 1)
    assert services.journey.get(attempt.id).state == "found"
    assert services.journey.get(broken.id).state == "searching"
    (entry,) = [e for e in logs if e["event"] == "search.outcome_not_recorded"]
    assert (entry["attempt"], entry["error"], entry["log_level"]) == (
        broken.id,
        "FlowVersionUnknown",
        "error",
    )

    # Past their time, the sweep ends the one it can and reports the other.
    stale = start(services, person(7))
    with transaction(services.sessions) as session:
        for attempt_id in (broken.id, stale.id):
            session.get(Attempt, attempt_id).expires_at = datetime.now(UTC) - timedelta(minutes=1)
    with capture_logs() as logs:
        assert services.journey.expire_stale() == (1, 1)  # expired, failed
    assert services.journey.get(stale.id).state == "expired"
    assert [e["attempt"] for e in logs if e["event"] == "attempt.expiry_failed"] == [broken.id]


def test_worker_once_exits_1_when_an_attempt_could_not_be_expired(services, settings):
    from click.testing import CliRunner

    from ueoz_migration.cli import main

    broken = start(services, HERMEGILDA)
    with transaction(services.sessions) as session:
        attempt = session.get(Attempt, broken.id)
        attempt.flow_version = "f" * 64  # its definition was never kept: it cannot move
        attempt.search_due_at = attempt.expires_at = datetime.now(UTC) + timedelta(days=1)
    stale = start(services, person(7))
    with transaction(services.sessions) as session:
        for attempt_id in (broken.id, stale.id):
            session.get(Attempt, attempt_id).expires_at = datetime.now(UTC) - timedelta(minutes=1)
    environ = {
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "INSTANCE_DIR": str(settings.instance_dir),
        "AUDIT_KEY": TEST_KEY,
        "SECRET_KEY": "test-secret",
    }

    result = CliRunner().invoke(main, ["worker", "--once"], env=environ)

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: 1 attempt(s) could not be moved on (attempt.expiry_failed); see the log"
    )
    assert services.journey.get(stale.id).state == "expired"


def test_the_worker_process_stops_cleanly_on_sigterm(tmp_path, database_url):
    environ = os.environ | {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "AUDIT_KEY": TEST_KEY,
        "SECRET_KEY": "test-secret",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "ueoz_migration.cli", "worker", "--worker-id", "sig"]
    process = subprocess.Popen(
        command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        started = ""
        while "worker.started" not in started:  # signal only once the handler is in place
            line = process.stdout.readline()
            assert line, "the worker exited before it started"
            started += line
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, started + output
    assert "worker.stopped" in output


# -- the demo data ------------------------------------------------------------------------

EXPECTED_BRANCH = {
    "87042712342": ("found", None),  # Anna Mickiewicz-Sokołowska, the manual's person
    "61020409154": ("found", None),
    "04251767804": ("found", None),
    "75031205191": ("error", 201),
    "82091503682": ("error", 202),
    "85021907848": ("error", 203),
    "90010114419": ("error", 204),
    "68072202179": ("error", 205),
    "79053006233": ("error", 206),
    "93061113987": ("skipped", None),
    "97040117247": ("error", 208),  # HERMEGILDA DLIGEMREH
}


def test_every_demo_person_lands_on_their_branch(services):
    seed_demo(services.sessions, pesel_key=services.settings.pesel_key)
    seed_demo(services.sessions, pesel_key=services.settings.pesel_key)  # idempotent
    attempts = {demo.person.pesel: start(services, demo.person).id for demo in DEMO_PEOPLE}

    search_worker(services).run_once()

    landed = {}
    for pesel, attempt_id in attempts.items():
        attempt = services.journey.get(attempt_id)
        landed[pesel] = (attempt.state, attempt.event_code)
    assert landed == EXPECTED_BRANCH


def test_the_manuals_anna_gets_her_eploz_email_offered(services):
    seed_demo(services.sessions, pesel_key=services.settings.pesel_key)
    anna = next(demo.person for demo in DEMO_PEOPLE if demo.person.pesel == "87042712342")
    attempt = start(services, anna)
    search_worker(services).run_once()

    attempt = services.journey.fire(attempt.id, "create_account", actor=user())

    assert attempt.email_prefill == "amicsokol@csioz.pl"
