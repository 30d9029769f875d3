"""``staff grant``, ``revoke`` and ``list``: who may use the staff console, PESELs masked."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from ueoz_migration.cli import main
from ueoz_migration.db.engine import snapshot
from ueoz_migration.db.models import StaffMember, StaffRole

EWA = "90010112349"


def cli(services, *args: str):
    return CliRunner().invoke(main, list(args), env=dict(services.settings.raw))


def test_grant_list_and_revoke_show_the_pesel_masked_and_who_granted(services):
    granted = cli(services, "staff", "grant", "--pesel", EWA, "--role", "helpdesk")
    again = cli(services, "staff", "grant", "--pesel", EWA, "--role", "helpdesk")
    cli(services, "staff", "grant", "--pesel", EWA, "--role", "auditor")
    revoked = cli(services, "staff", "revoke", "--pesel", EWA, "--role", "auditor")
    held = cli(services, "staff", "list")
    everything = cli(services, "staff", "list", "--all")

    assert (granted.exit_code, granted.output) == (0, "********349 granted helpdesk\n")
    assert again.output == "********349 already holds helpdesk\n"
    assert revoked.output == "********349 no longer holds auditor\n"
    assert held.output.splitlines()[0].split() == ["staff", "PESEL", "role", "granted", "by"]
    [row] = held.output.splitlines()[1:]
    assert row.split()[1:3] == ["********349", "helpdesk"] and "shell:" in row
    assert len(everything.output.splitlines()) == 3  # the header, helpdesk, auditor (revoked)
    for result in (granted, held, everything):
        assert EWA not in result.output
    with snapshot(services.sessions) as session:
        member = session.scalars(select(StaffMember)).one()
        roles = session.scalars(select(StaffRole.role).where(StaffRole.revoked_at.is_(None)))
        assert member.pesel == EWA and EWA not in member.pesel_hash
        assert list(roles) == ["helpdesk"]


def test_a_role_not_held_and_a_wrong_pesel_are_refused_without_the_pesel(services):
    not_held = cli(services, "staff", "revoke", "--pesel", EWA, "--role", "operator")
    wrong = cli(services, "staff", "grant", "--pesel", "90010112340", "--role", "operator")
    unknown_role = cli(services, "staff", "grant", "--pesel", EWA, "--role", "admin")

    assert not_held.exit_code == 1
    assert "Error: ********349 does not hold operator" in not_held.output
    assert wrong.exit_code == 2 and "is not a valid PESEL" in wrong.output
    assert "90010112340" not in wrong.output
    assert unknown_role.exit_code == 2
    assert cli(services, "staff", "list").output == "no staff roles granted\n"
