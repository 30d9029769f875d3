"""The ``ueoz-migration`` command: operators, auditors, helpdesk and developers."""

from __future__ import annotations

import sys

import click

from .bootstrap import Services
from .config import ConfigError


@click.group()
@click.pass_context
def main(context: click.Context) -> None:
    """UEOZ migration service: e-PLOZ accounts into UEOZ at first login through login.gov.pl."""
    try:
        context.obj = Services.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from error


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(services: Services, revision: str) -> None:
    """Bring the database to the current schema (or to REVISION)."""
    from .db.schema import upgrade

    upgrade(services.engine, revision)
    click.echo(f"database at {revision}: {services.engine.url.render_as_string()}")


@db.command("revision", hidden=True)
@click.argument("message")
@click.pass_obj
def db_revision(services: Services, message: str) -> None:
    """Write a migration for the change to the models (developers)."""
    from .db.schema import revision

    revision(services.engine, message)


if __name__ == "__main__":
    sys.exit(main())
