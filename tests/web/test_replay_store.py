"""The SP's replay store in the shared database: each artifact is accepted once, anywhere."""

from __future__ import annotations

from datetime import timedelta

from ueoz_migration.adapters.wk_replay import DbReplayStore
from ueoz_migration.bootstrap import Services
from ueoz_migration.journey import utcnow


def test_a_key_is_accepted_once_across_processes(services, settings):
    later = utcnow() + timedelta(minutes=5)
    other_instance = Services(settings)  # its own engine, as another machine would have
    try:
        assert DbReplayStore(services.sessions).first_use("artifact", "AAQ-1", later)
        assert not DbReplayStore(other_instance.sessions).first_use("artifact", "AAQ-1", later)
        assert DbReplayStore(services.sessions).first_use("assertion", "AAQ-1", later)
    finally:
        other_instance.engine.dispose()


def test_an_expired_key_is_forgotten(services):
    store = DbReplayStore(services.sessions)
    assert store.first_use("artifact", "old", utcnow() - timedelta(seconds=1))

    assert store.first_use("artifact", "old", utcnow() + timedelta(minutes=5))
