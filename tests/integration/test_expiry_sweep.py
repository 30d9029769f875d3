"""The expiry sweep ends what was left alone, and only that; the logs name only what committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event as engine_event
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from tests.factories import ANNA, add_eploz_account, log_of, user
from tests.integration.test_search_worker import give_ueoz_account, person
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import Attempt
from ueoz_migration.journey import Actor, Journey

UNKNOWN_FLOW = "f" * 64


def backdate(services, attempt_id, *, by: timedelta, flow_version: str | None = None) -> None:
    with transaction(services.sessions) as session:
        attempt = session.get(Attempt, attempt_id)
        attempt.expires_at = datetime.now(UTC) - by
        if flow_version:
            attempt.flow_version = flow_version


def person_clicks_as_the_sweep_comes(monkeypatch, event: str) -> None:
    """The person's ``event``, a moment before the attempt's time ran out, as the sweep comes.

    The sweep has read the attempt as stale by the worker's clock; the click reaches a web
    instance whose clock is a few seconds behind, and takes the attempt's lock first.
    """
    real = Journey._expire_if_stale

    def click_first(self, attempt_id, actor):
        worker_clock = self.clock
        self.clock = lambda: worker_clock() - timedelta(seconds=5)
        try:
            self.fire(attempt_id, event, actor=user())
        finally:
            self.clock = worker_clock
        return real(self, attempt_id, actor)

    monkeypatch.setattr(Journey, "_expire_if_stale", click_first)


def test_an_attempt_the_person_moves_while_the_sweep_runs_is_not_expired(services, monkeypatch):
    journey = services.journey
    attempt = journey.start(ANNA, actor=user())
    journey.fire(
        attempt.id, "account_found", actor=user(), eploz_account_id=add_eploz_account(services)
    )
    backdate(services, attempt.id, by=timedelta(seconds=1))
    person_clicks_as_the_sweep_comes(monkeypatch, "create_account")  # "Utwórz konto"

    assert journey.expire_stale() == (0, 0)
    assert journey.get(attempt.id).state == "email_entry"
    assert [row.event for row in log_of(services, attempt.id)] == [
        "start",
        "account_found",
        "create_account",
    ]


def test_attempts_that_cannot_be_moved_do_not_hold_up_the_rest(services):
    journey = services.journey
    ids = [journey.start(person(n), actor=user()).id for n in range(4)]
    for n, attempt_id in enumerate(ids[:3]):  # the oldest three: their flow is nowhere
        backdate(services, attempt_id, by=timedelta(minutes=20 - n), flow_version=UNKNOWN_FLOW)
    backdate(services, ids[3], by=timedelta(minutes=1))

    assert journey.expire_stale(batch=2) == (1, 3)
    assert journey.get(ids[3]).state == "expired"
    assert [journey.get(attempt_id).state for attempt_id in ids[:3]] == ["searching"] * 3


def test_an_event_number_is_logged_only_once_it_is_committed(services):
    journey = services.journey
    first, second = (journey.start(person(n), actor=user()) for n in (1, 2))
    worker = Actor("worker", "w")
    failures = ["at commit"]

    def lose_the_connection(_connection):
        if failures:
            failures.pop()
            raise OperationalError("COMMIT", {}, Exception("connection lost"))

    engine_event.listen(services.engine, "commit", lose_the_connection)
    try:
        with capture_logs() as logs, pytest.raises(OperationalError):
            journey.fire(first.id, "search_failed", actor=worker, code=201)
    finally:
        engine_event.remove(services.engine, "commit", lose_the_connection)

    assert [line for line in logs if line["event"] == "attempt.transition"] == []
    assert journey.get(first.id).event_number is None
    with capture_logs() as logs:
        second = journey.fire(second.id, "search_failed", actor=worker, code=201)
    (line,) = [line for line in logs if line["event"] == "attempt.transition"]
    assert line["event_number"] == second.event_number
    assert line["attempt"] == second.id


def test_an_attempt_the_person_ended_while_the_sweep_runs_is_left_as_it_is(services, monkeypatch):
    journey = services.journey
    attempt = journey.start(ANNA, actor=user())
    backdate(services, attempt.id, by=timedelta(seconds=1))
    person_clicks_as_the_sweep_comes(monkeypatch, "cancel")

    assert journey.expire_stale() == (0, 0)
    assert [row.event for row in log_of(services, attempt.id)] == ["start", "cancel"]


def test_the_sweep_and_a_skip_each_log_their_transition(services):
    journey = services.journey
    stale = journey.start(person(7), actor=user())
    backdate(services, stale.id, by=timedelta(seconds=1))

    with capture_logs() as logs:
        assert journey.expire_stale() == (1, 0)

    (line,) = [line for line in logs if line["event"] == "attempt.transition"]
    assert (line["attempt"], line["event_name"], line["target"]) == (stale.id, "expire", "expired")

    migrated = person(8)
    give_ueoz_account(
        services, migrated, add_eploz_account(services, pesel=migrated.pesel), verified=True
    )
    with capture_logs() as logs:
        skipped = journey.start(migrated, actor=user())

    assert skipped.state == "skipped"
    (line,) = [line for line in logs if line["event"] == "attempt.transition"]
    assert (line["attempt"], line["event_name"], line["target"]) == (skipped.id, "skip", "skipped")
