"""`ueoz-migration worker --once`: the line it prints after its pass."""

from __future__ import annotations

from click.testing import CliRunner

from tests.conftest import TEST_KEY
from tests.factories import ANNA, HERMEGILDA, user
from ueoz_migration.cli import main


def worker_once(settings):
    environ = {
        "APP_ENV": "test",
        "DATABASE_URL": settings.database_url,
        "INSTANCE_DIR": str(settings.instance_dir),
        "AUDIT_KEY": TEST_KEY,
        "PESEL_HASH_KEY": settings.pesel_key.decode(),
        "SECRET_KEY": "test-secret",
    }
    return CliRunner().invoke(main, ["worker", "--once"], env=environ)


def test_worker_once_counts_the_failed_searches_by_code(services, settings):
    for person in (ANNA, HERMEGILDA):  # no e-PLOZ account for either: 201
        services.journey.start(person, actor=user(), domain_system="P1")

    result = worker_once(settings)

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "searched 2: found 0, failed 2 (code 201: 2), to retry 0, superseded 0; expired 0\n"
    )


def test_worker_once_with_nothing_to_do_says_failed_0(services, settings):
    result = worker_once(settings)

    assert result.exit_code == 0, result.output
    assert result.stdout == "searched 0: found 0, failed 0, to retry 0, superseded 0; expired 0\n"
