"""Attempts open under a flow version this release cannot run: refused whole, and said.

A release whose behaviours, events or screens no longer match an open attempt's flow version
(a behaviour renamed in ``states/``, say) must not half-move those attempts; the operator
learns it from ``ueoz-migration flows check`` before the rollout, and from the logs and
``/readyz`` after.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from tests.factories import ANNA, HERMEGILDA, log_of, put_on_flow_version, user
from ueoz_migration.cli import main
from ueoz_migration.db.engine import transaction
from ueoz_migration.db.models import Attempt
from ueoz_migration.journey import FlowNotRunnable


def flows_cli(services, *args):
    return CliRunner().invoke(main, ["flows", *args], env=dict(services.settings.raw))


def older_release_flow(services) -> str:
    """A flow version of an older release, whose behaviour this release has since renamed."""
    return services.flow.source.replace("start_without_eploz", "begin_without_eploz")


def test_an_event_at_an_attempt_of_a_version_this_release_cannot_run_changes_nothing(services):
    attempt = services.journey.start(HERMEGILDA, actor=user())
    services.journey.fire(attempt.id, "search_failed", actor=user(), code=208)
    version = put_on_flow_version(services, attempt.id, older_release_flow(services))
    rows = len(log_of(services, attempt.id))

    with pytest.raises(FlowNotRunnable) as problem:
        services.journey.fire(attempt.id, "cancel", actor=user())

    assert problem.value.version == version
    assert services.journey.get(attempt.id).state == "error"
    assert len(log_of(services, attempt.id)) == rows


def test_flows_check_names_the_version_and_what_is_missing(services):
    attempt = services.journey.start(ANNA, actor=user())
    version = put_on_flow_version(services, attempt.id, older_release_flow(services))
    services.journey.start(HERMEGILDA, actor=user())  # on this release's own version

    checked = flows_cli(services, "check")

    assert checked.exit_code == 1
    message = checked.output.strip()
    assert message.startswith(f"Error: flow version {version[:12]} cannot run in this release: ")
    assert "'begin_without_eploz'" in message
    assert message.endswith('(docs/operations.md, "Changing the flow")')


def test_flows_check_passes_and_list_and_show_tell_the_versions_apart(services):
    first = services.journey.start(ANNA, actor=user())
    services.journey.fire(first.id, "cancel", actor=user())
    services.journey.start(HERMEGILDA, actor=user())
    older = put_on_flow_version(services, first.id, older_release_flow(services))

    checked = flows_cli(services, "check")
    listed = flows_cli(services, "list")
    shown = flows_cli(services, "show", older[:12])

    # The attempt on the older version has ended: nothing open needs it any more.
    assert (checked.exit_code, checked.output) == (
        0,
        "this release runs every open attempt's flow version: 1 open attempt on 1 flow version\n",
    )
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == ["version", "first", "used", "(UTC)", "attempts", "open", "here"]
    own = next(line for line in lines if line.startswith(services.flow.version[:12]))
    assert own.split()[3:] == ["1", "1", "runs", "(this", "release's", "own)"]
    old = next(line for line in lines if line.startswith(older[:12]))
    assert old.split()[3:5] == ["1", "0"]
    assert "cannot run: " in old and "begin_without_eploz" in old
    assert (shown.exit_code, shown.output) == (0, older_release_flow(services))
    assert flows_cli(services, "show", "0000000000").exit_code == 1
    assert flows_cli(services, "show", "f85d").exit_code == 2  # too short to name one


def test_flows_list_and_check_agree_on_a_version_with_a_state_no_page_shows(services):
    attempt = services.journey.start(ANNA, actor=user())
    renamed = services.flow.source.replace("email_entry", "address_entry")  # a state renamed
    version = put_on_flow_version(services, attempt.id, renamed)

    listed = flows_cli(services, "list")
    checked = flows_cli(services, "check")

    row = next(line for line in listed.output.splitlines() if line.startswith(version[:12]))
    assert row.endswith("cannot run: no screen for address_entry")
    assert checked.exit_code == 1
    assert f"{version[:12]} cannot run in this release: no screen for address_entry" in (
        checked.output
    )


def test_the_sweep_names_why_it_could_not_expire_such_an_attempt(services):
    attempt = services.journey.start(ANNA, actor=user())
    version = put_on_flow_version(services, attempt.id, older_release_flow(services))
    with transaction(services.sessions) as session:
        session.get(Attempt, attempt.id).expires_at = datetime.now(UTC) - timedelta(minutes=1)

    with capture_logs() as logs:
        assert services.journey.expire_stale() == (0, 1)  # expired, failed

    (entry,) = [e for e in logs if e["event"] == "attempt.expiry_failed"]
    assert entry["error"] == "FlowNotRunnable"
    assert entry["reason"].startswith(f"flow version {version[:12]} cannot run in this release")
    assert services.journey.get(attempt.id).state == "searching"


def test_flows_list_before_any_attempt_says_there_is_nothing_yet(services):
    listed = flows_cli(services, "list")

    assert (listed.exit_code, listed.output) == (
        0,
        "no flow version stored yet: no attempt has started\n",
    )
