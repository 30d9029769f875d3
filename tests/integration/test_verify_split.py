"""A long log is verified by several processes at once; the auditor gets the same report.

Each test tampers with the log behind the service's back, as in test_audit_tampering.py,
then verifies it in one pass and split over processes, and compares what each reports.
"""

from __future__ import annotations

import os
from datetime import date

import pytest
from sqlalchemy import make_url, text

from tests.factories import user
from ueoz_migration.audit import verify
from ueoz_migration.audit.verify import (
    MAX_PROCESSES,
    PARALLEL_FROM,
    VerifyAborted,
    _split,
    default_processes,
    verify_chain,
)
from ueoz_migration.domain.identity import Person


def people(count):
    return [
        Person("Jan", f"Split{index}", date(1990, 1, 1), f"900101{index:05d}")
        for index in range(count)
    ]


def started_attempts(services, count):
    """Attempts with logs of 1 to 3 rows each; return their ids in the order of ids."""
    journey = services.journey
    ids = []
    for index, person in enumerate(people(count)):
        attempt = journey.start(person, actor=user(f"req-{index}"))
        if index % 3:
            journey.fire(attempt.id, "search_failed", actor=user(), code=208)
        if index % 3 == 2:
            journey.fire(attempt.id, "continue_new", actor=user())
        ids.append(attempt.id)
    return sorted(ids)


def tamper(services, statement, **params):
    with services.engine.begin() as connection:
        connection.execute(text(statement), params)


def both_ways(services, processes=3):
    with services.sessions() as session:
        ranges = _split(session, processes)
        single = verify_chain(session, services.settings.audit_key, processes=1)
    with services.sessions() as session:
        split = verify_chain(session, services.settings.audit_key, processes=processes)
    assert len(ranges) == processes  # the attempts really were split
    return single, split


def summary(report):
    return (report.ok, report.attempts, report.rows, report.broken_attempts, report.findings)


def test_a_clean_log_verifies_the_same_split_over_processes(services):
    started_attempts(services, 9)

    single, split = both_ways(services)

    assert split.ok
    assert (split.attempts, split.rows) == (9, 18)
    assert summary(split) == summary(single)


def test_problems_in_every_range_are_reported_in_the_order_of_attempts(services):
    ids = started_attempts(services, 9)
    first, middle, last, empty = ids[0], ids[4], ids[8], ids[6]
    tamper(services, "UPDATE transition_log SET actor = 'x' WHERE attempt_id = :a", a=last)
    tamper(services, "UPDATE transition_log SET event = 'x' WHERE attempt_id = :a", a=middle)
    tamper(services, "UPDATE attempts SET log_seq = 9 WHERE id = :a", a=first)
    tamper(services, "DELETE FROM transition_log WHERE attempt_id = :a", a=empty)
    tamper(services, "DELETE FROM transition_log WHERE attempt_id = :a", a=ids[1])

    single, split = both_ways(services)

    assert summary(split) == summary(single)
    assert split.broken_attempts == 5
    assert [finding.attempt_id for finding in split.findings] == [
        first,
        middle,
        last,
        *sorted([empty, ids[1]]),  # attempts with an empty log come last, in order
    ]
    assert split.first is not None and "tail was cut off" in split.first.problem


def test_a_long_log_is_split_one_process_a_cpu():
    cpus = min(len(os.sched_getaffinity(0)), MAX_PROCESSES)
    on_disk = make_url("sqlite:////var/lib/ueoz/ueoz.sqlite3")

    assert default_processes(on_disk, PARALLEL_FROM - 1) == 1
    assert default_processes(on_disk, PARALLEL_FROM) == cpus
    assert default_processes(make_url("sqlite://"), PARALLEL_FROM) == 1  # children cannot see it
    assert default_processes(make_url("postgresql://db.example/ueoz"), PARALLEL_FROM) == cpus
    assert default_processes(make_url("postgresql://127.0.0.1/ueoz"), PARALLEL_FROM) == cpus


def killed_like_by_the_oom_killer(url, key, bounds):
    """Stands in for a verifying child that the kernel ends before it reports."""
    os._exit(137)


def test_a_verifying_process_that_dies_ends_the_check_with_an_error_not_a_hang(
    services, monkeypatch
):
    started_attempts(services, 6)
    monkeypatch.setattr(verify, "_verify_range", killed_like_by_the_oom_killer)

    with services.sessions() as session, pytest.raises(VerifyAborted, match="run the check"):
        verify_chain(session, services.settings.audit_key, processes=2)
