"""`ueoz-migration pesel rekey`: the PESEL hashes move to a new key; people are still found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text

from tests.conftest import make_settings
from tests.factories import ANNA, HERMEGILDA, add_eploz_account, link_token, log_of, submit, user
from ueoz_migration.bootstrap import Services
from ueoz_migration.cli import main
from ueoz_migration.console.staff import Role, Staff
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import Attempt, Base, TransitionLogEntry, UeozAccount
from ueoz_migration.db.pesel_keys import chained_columns, hashed_columns, rekey
from ueoz_migration.domain.identity import Person
from ueoz_migration.domain.privacy import pesel_hash
from ueoz_migration.journey import utcnow

# The keys of a deployment from before the split: its PESEL hashes were made with AUDIT_KEY.
OLD = "test-audit-key-0123456789abcdef"
NEW = "a new PESEL hash key, 32 bytes or more"
JAN = Person("Jan", "Kowalski", None, "75031205191")
EWA = "90010112349"  # of the helpdesk: in no table but the staff's


def test_the_re_key_finds_every_pesel_hash_column_in_the_models():
    covered = {f"{t.name}.{c.name}" for t, columns in hashed_columns().items() for c in columns}
    chained = {f"{c.table.name}.{c.name}" for c in chained_columns()}

    assert covered == {
        "sso_sessions.pesel_hash",
        "staff.pesel_hash",
        "ueoz_accounts.pesel_hash",
        "attempts.pesel_hash",
        "attempts.open_pesel_key",
    }
    assert chained == {"transition_log.pesel_hash"}
    # A column added later that holds a PESEL hash under another name must be marked
    # (info={PESEL_HASH: True}), or the re-key would leave it under the old key.
    unmarked = (
        {
            f"{table.name}.{column.name}"
            for table in Base.metadata.sorted_tables
            for column in table.columns
            if "pesel" in column.name and column.name != "pesel"
        }
        - covered
        - chained
    )
    assert unmarked == set()


@pytest.fixture
def services(tmp_path, database_url) -> Iterator[Services]:
    """Under the old key: Anna migrated, Hermegilda's attempt open on the error screen, Jan's
    cancelled; Ewa of the helpdesk holds a role in the staff console."""
    services = Services(make_settings(tmp_path, database_url, PESEL_HASH_KEY=OLD))
    journey = services.journey
    anna = journey.start(ANNA, actor=user())
    journey.fire(
        anna.id, "account_found", actor=user(), eploz_account_id=add_eploz_account(services)
    )
    journey.fire(anna.id, "create_account", actor=user())
    submit(services, anna.id)
    journey.fire(anna.id, "verify", actor=user(), token=link_token(services, anna.id))
    hermegilda = journey.start(HERMEGILDA, actor=user())
    journey.fire(hermegilda.id, "search_failed", actor=user(), code=208)
    jan = journey.start(JAN, actor=user())
    journey.fire(jan.id, "search_failed", actor=user(), code=201)
    journey.fire(jan.id, "cancel", actor=user())
    Staff(services.sessions, OLD.encode()).grant(EWA, Role.HELPDESK, by="shell:test", now=utcnow())
    yield services
    services.engine.dispose()


def run(services, *args, **environ):
    env = {**services.settings.raw, **environ}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def hashes(services) -> dict[str, set]:
    with services.sessions() as session:
        return {
            "attempts": set(session.execute(select(Attempt.pesel_hash, Attempt.open_pesel_key))),
            "accounts": set(session.scalars(select(UeozAccount.pesel_hash))),
            "log": set(session.scalars(select(TransitionLogEntry.pesel_hash))),
        }


def test_a_re_key_moves_every_hash_and_people_are_still_found(services, tmp_path, database_url):
    log_before = hashes(services)["log"]
    anna = services.journey.start(ANNA, actor=user())  # skipped: the log shows the visit
    anna_id = anna.id
    # Signed in at UEOZ: her single sign-on session holds the hash too (oidc/sso.py).
    sso_id = services.provider.sso.open(
        pesel_hash=anna.pesel_hash, acr="http://eidas.europa.eu/LoA/substantial",
        name_id="n", session_index="s",
    )  # fmt: skip

    result = run(services, "pesel", "rekey", PESEL_HASH_KEY=NEW, OLD_PESEL_HASH_KEY=OLD)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "sso_sessions.pesel_hash: 1 re-keyed, 0 under the new key already",
        "staff.pesel_hash: 1 re-keyed, 0 under the new key already",
        "ueoz_accounts.pesel_hash: 1 re-keyed, 0 under the new key already",
        "attempts.pesel_hash: 4 re-keyed, 0 under the new key already",
        "attempts.open_pesel_key: 1 re-keyed, 0 under the new key already",
        "transition_log.pesel_hash: kept (inside the audit chain)",
    ]
    new = {p.pesel: pesel_hash(NEW.encode(), p.pesel) for p in (ANNA, HERMEGILDA, JAN)}
    after = hashes(services)
    assert after["accounts"] == {new[ANNA.pesel]}
    assert after["attempts"] == {
        (new[ANNA.pesel], None),  # migrated
        (new[HERMEGILDA.pesel], new[HERMEGILDA.pesel]),  # open
        (new[JAN.pesel], None),  # cancelled
    }
    assert after["log"] == log_before  # the chain's rows as they were written

    # The auditors' chain and story hold as before.
    audit = {"AUDIT_KEY": OLD, "PESEL_HASH_KEY": ""}
    verified = run(services, "audit", "verify", "--all", **audit)
    replayed = run(services, "audit", "replay", "--all", **audit)
    assert verified.exit_code == 0 and "verify: OK; 4 attempt(s)" in verified.output
    assert replayed.exit_code == 0 and "replay: OK; 4 attempt(s)" in replayed.output

    # The service under the new key: Hermegilda resumes, Anna goes straight on.
    rekeyed = Services(make_settings(tmp_path, database_url, PESEL_HASH_KEY=NEW))
    hermegilda = rekeyed.journey.start(HERMEGILDA, actor=user())
    anna = rekeyed.journey.start(ANNA, actor=user())
    assert (hermegilda.state, hermegilda.event_code) == ("error", 208)
    assert hermegilda.id in {attempt_id for (attempt_id,) in open_attempts(rekeyed)}
    assert anna.state == "skipped" and anna.id != anna_id
    assert log_of(rekeyed, anna.id)[-1].pesel_hash == new[ANNA.pesel]
    # And her single sign-on session still finds her migrated account.
    assert rekeyed.provider.sso.signed_in(sso_id).given_names == ANNA.given_names
    # Ewa, once she has logged in at the node, is still of the helpdesk.
    staff = Staff(rekeyed.sessions, NEW.encode())
    assert staff.identify(pesel_hash(NEW.encode(), EWA)).roles == {Role.HELPDESK}
    rekeyed.engine.dispose()


def open_attempts(services):
    with services.sessions() as session:
        return session.execute(select(Attempt.id).where(Attempt.open_pesel_key.is_not(None)))


def test_a_second_re_key_changes_nothing(services):
    run(services, "pesel", "rekey", PESEL_HASH_KEY=NEW, OLD_PESEL_HASH_KEY=OLD)
    before = hashes(services)

    again = run(services, "pesel", "rekey", PESEL_HASH_KEY=NEW, OLD_PESEL_HASH_KEY=OLD)

    assert again.exit_code == 0
    assert again.output.splitlines()[:5] == [
        "sso_sessions.pesel_hash: 0 re-keyed, 0 under the new key already",
        "staff.pesel_hash: 0 re-keyed, 1 under the new key already",
        "ueoz_accounts.pesel_hash: 0 re-keyed, 1 under the new key already",
        "attempts.pesel_hash: 0 re-keyed, 3 under the new key already",
        "attempts.open_pesel_key: 0 re-keyed, 1 under the new key already",
    ]
    assert hashes(services) == before


def test_a_wrong_old_key_changes_nothing(services):
    before = hashes(services)

    result = run(
        services, "pesel", "rekey", PESEL_HASH_KEY=NEW, OLD_PESEL_HASH_KEY="not the old key"
    )

    assert result.exit_code == 1
    assert result.output == (
        "Error: hashes under neither key in staff.pesel_hash (1 row(s)), "
        "ueoz_accounts.pesel_hash (1 row(s)), "
        "attempts.pesel_hash (3 row(s)), attempts.open_pesel_key (1 row(s)): is "
        "OLD_PESEL_HASH_KEY the key they were made with? Nothing changed\n"
    )
    assert hashes(services) == before


def test_the_re_key_needs_both_keys_and_two_different_ones(services):

    without_old = run(services, "pesel", "rekey", PESEL_HASH_KEY=NEW)
    same = run(services, "pesel", "rekey", PESEL_HASH_KEY=OLD, OLD_PESEL_HASH_KEY=OLD)

    assert without_old.exit_code == 1 and "set OLD_PESEL_HASH_KEY to the key" in without_old.output
    assert same.exit_code == 1 and "are the same key" in same.output


def test_a_table_keeping_only_the_hash_is_re_keyed_through_the_others(services):
    # As a table added later may: a PESEL hash with no PESEL beside it.
    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    subjects = Table(
        "test_subjects",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("pesel_hash", String(64)),
    )
    old = {p.pesel: pesel_hash(OLD.encode(), p.pesel) for p in (ANNA, HERMEGILDA)}
    subjects.create(services.engine)
    try:
        with transaction(services.sessions) as session:
            session.execute(subjects.insert(), [{"pesel_hash": h} for h in old.values()])
            report = rekey(session, OLD.encode(), NEW.encode(), metadata)
        with services.sessions() as session:
            stored = set(session.scalars(select(subjects.c.pesel_hash)))
    finally:
        with services.engine.begin() as connection:
            connection.execute(text("DROP TABLE test_subjects"))

    assert report.columns["test_subjects.pesel_hash"].rekeyed == 2
    assert stored == {pesel_hash(NEW.encode(), p.pesel) for p in (ANNA, HERMEGILDA)}
