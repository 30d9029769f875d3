"""The idle looks of the search worker and the mail sender see exactly what their claims take."""

from __future__ import annotations

from datetime import timedelta

from tests.clock import Clock
from tests.factories import ANNA, add_eploz_account, search_worker, user
from tests.mail import awaiting_verification
from ueoz_migration.adapters.maildir import MaildirTransport
from ueoz_migration.workers.outbox import OutboxSender


def test_the_worker_sees_a_due_search_until_it_holds_the_lease(services):
    add_eploz_account(services)
    worker = search_worker(services)
    assert not worker.has_due()

    attempt = services.journey.start(ANNA, actor=user())
    assert worker.has_due()

    claim = worker.claim()
    assert claim is not None and claim.attempt_id == attempt.id
    assert not worker.has_due()  # leased: another worker's look passes it by

    later = search_worker(services, clock=lambda: claim.lease_until + timedelta(seconds=1))
    assert later.has_due()  # the lease ran out: the attempt is free to take over


def test_the_worker_sees_nothing_once_the_search_is_done(services):
    add_eploz_account(services)
    worker = search_worker(services)
    attempt = services.journey.start(ANNA, actor=user())

    worker.run_once()

    assert services.journey.get(attempt.id).state == "found"
    assert not worker.has_due()


def test_the_sender_sees_due_mail_until_it_is_sent(services, settings):
    def sender_at(clock):
        transport = MaildirTransport(settings.maildir_path)
        return OutboxSender.from_settings(
            services.settings, services.sessions, transport=transport, clock=clock
        )

    assert not sender_at(Clock()).has_due()

    awaiting_verification(services)
    clock = Clock()  # now, after the message was queued
    sender = sender_at(clock)
    assert sender.has_due()

    claimed = sender.claim()
    assert len(claimed) == 1 and not sender.has_due()  # leased

    clock.advance(sender.lease + timedelta(seconds=1))
    assert sender.has_due()  # the lease ran out

    assert sender.send_due().sent == 1
    assert not sender.has_due()
