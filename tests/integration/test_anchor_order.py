"""Anchors taken while the log is written: no anchor may cover a row that commits after it.

Row ids are taken when a row is inserted, and transactions commit in another order. An anchor
that saw row 101 but not row 100 (still uncommitted) would no longer be extended once 100
commits: a false alarm. These tests write the log from several transactions at once, each
holding its row a while before it commits, and take anchors meanwhile.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.audit_log import logged_journey
from tests.clock import Clock
from ueoz_migration.anchors import take as take_module
from ueoz_migration.anchors.check import check_log
from ueoz_migration.anchors.keys import signing_key
from ueoz_migration.anchors.leaves import LogBusy
from ueoz_migration.anchors.take import take_anchor
from ueoz_migration.journey import utcnow

# A row appended to an attempt's log (a copy of its first, another seq): the anchors hash
# every row, chained or not, and these tests look at the anchors only.
APPEND = text(
    "INSERT INTO transition_log (attempt_id, seq, at, event, source, target, outcome, actor, "
    "request_id, flow_version, event_number, event_code, pesel_hash, detail, prev_hash, hash) "
    "SELECT attempt_id, :seq, at, event, source, target, outcome, actor, 'concurrent', "
    "flow_version, NULL, NULL, pesel_hash, '', hash, :hash FROM transition_log "
    "WHERE attempt_id = :a AND seq = 1"
)


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "anchors"
    path.mkdir()
    return path


def test_anchors_taken_among_concurrent_writers_are_all_extended(services, folder):
    attempt = logged_journey(services)
    key = signing_key(services.settings)
    seqs = itertools.count(100)
    stop = threading.Event()
    errors = []

    def write():
        rng = random.Random()
        try:
            while not stop.is_set():
                with services.engine.begin() as connection:
                    seq = next(seqs)
                    connection.execute(APPEND, {"seq": seq, "hash": f"{seq:064d}", "a": attempt.id})
                    time.sleep(rng.uniform(0, 0.02))  # commit later than rows taken after it
                time.sleep(0.005)  # SQLite's writers queue for one lock: let the anchors in
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    writers = [threading.Thread(target=write) for _ in range(4)]
    for writer in writers:
        writer.start()
    # A second later on every reading, so that anchors taken in a burst get names of their own.
    clock, anchors = Clock(tick=timedelta(seconds=1)), []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            anchors.append(take_anchor(services.engine, services.sessions, key, folder, clock()))
            time.sleep(0.02)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    anchors.append(take_anchor(services.engine, services.sessions, key, folder, clock()))

    with services.sessions() as session:
        report = check_log(session, folder, key.public_key())

    assert not errors
    assert len({taken.anchor.size for taken in anchors}) > 5  # the log grew between them
    assert report.not_extended == [] and report.refused == []
    assert report.anchors == len(anchors)
    assert anchors[-1].anchor.size == report.rows  # the last one covers every row


def open_row(services, attempt_id, seq):
    """A transaction that has inserted a log row and not committed it yet."""
    connection = services.engine.connect()
    transaction = connection.begin()
    connection.execute(APPEND, {"seq": seq, "hash": f"{seq:064d}", "a": attempt_id})
    return connection, transaction


def committed_row(services, attempt_id, seq):
    with services.engine.begin() as connection:
        connection.execute(APPEND, {"seq": seq, "hash": f"{seq:064d}", "a": attempt_id})


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_anchor_waits_for_a_row_inserted_before_it_and_committed_after(services, folder):
    # SQLite has one writer at a time: a later row cannot commit before an earlier one.
    attempt = logged_journey(services)
    key = signing_key(services.settings)
    connection, pending = open_row(services, attempt.id, 100)  # id 7, not committed
    committed_row(services, attempt.id, 101)  # id 8, committed
    result = []
    anchoring = threading.Thread(
        target=lambda: result.append(
            take_anchor(services.engine, services.sessions, key, folder, utcnow())
        )
    )
    anchoring.start()
    time.sleep(0.5)
    waited = anchoring.is_alive()
    pending.commit()
    connection.close()
    anchoring.join()
    time.sleep(1.01)
    latest = take_anchor(services.engine, services.sessions, key, folder, utcnow())

    with services.sessions() as session:
        report = check_log(session, folder, key.public_key())

    assert waited  # for the open transaction, rather than anchoring row 8 without row 7
    assert result[0].anchor.size == 8 and latest.anchor.size == 8
    assert report.ok


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_highest_id_alone_is_no_safe_end_as_this_shows(services, folder, monkeypatch):
    # The control: read the highest id without waiting for the transactions in flight, and
    # the anchor covers row 8 but not row 7, which commits after it: a false alarm.
    attempt = logged_journey(services)
    key = signing_key(services.settings)
    monkeypatch.setattr(take_module, "settled_end", _max)
    connection, pending = open_row(services, attempt.id, 100)
    committed_row(services, attempt.id, 101)
    early = take_anchor(services.engine, services.sessions, key, folder, utcnow())
    pending.commit()
    connection.close()

    with services.sessions() as session:
        report = check_log(session, folder, key.public_key())

    assert early.anchor.size == 7  # rows 1-6 and row 8
    assert [finding.name for finding in report.not_extended] == [early.anchor.file_name]
    assert "they part after size 6" in report.not_extended[0].problem


def _max(engine):
    with engine.connect() as connection:
        return connection.scalar(text("SELECT max(id) FROM transition_log"))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_anchor_gives_up_on_a_transaction_that_keeps_writing_the_log(services, folder):
    attempt = logged_journey(services)
    key = signing_key(services.settings)
    connection, pending = open_row(services, attempt.id, 100)
    try:
        with pytest.raises(LogBusy, match="did not end within 2s: nothing anchored"):
            take_anchor(services.engine, services.sessions, key, folder, utcnow())
    finally:
        pending.rollback()
        connection.close()

    assert list(folder.iterdir()) == []
