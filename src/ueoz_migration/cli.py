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


# -- e-PLOZ directory and search worker (eploz import, eploz seed-demo, worker) -----------


@main.group()
def eploz() -> None:
    """The e-PLOZ directory the search reads."""


@eploz.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.pass_obj
def eploz_import(services: Services, file: str) -> None:
    """Load e-PLOZ's CSV export FILE; a file with any bad line is refused as a whole."""
    from pathlib import Path

    from sqlalchemy.exc import IntegrityError

    from .adapters.eploz import ExportRejected, import_accounts, read_export
    from .journey import utcnow

    try:
        rows = read_export(Path(file).read_bytes())
    except ExportRejected as rejected:
        lines = "\n".join(f"  {problem}" for problem in rejected.problems)
        raise click.ClickException(
            f"{file} refused, nothing imported ({rejected}):\n{lines}"
        ) from rejected
    try:
        report = import_accounts(services.sessions, rows, now=utcnow())
    except IntegrityError as error:
        raise click.ClickException(
            f"{file}: another import changed the directory at the same time; "
            "nothing imported, run it again"
        ) from error
    finally:
        services.engine.dispose()
    click.echo(
        f"imported {file}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged ({report.rows} rows)"
        + (f"; {report.not_in_file} accounts not in the file kept" if report.not_in_file else "")
    )


@eploz.command("seed-demo")
@click.pass_obj
def eploz_seed_demo(services: Services) -> None:
    """Load the demo people's e-PLOZ and UEOZ accounts (every search branch); safe to repeat."""
    from .demo import DEMO_PEOPLE, seed_demo

    try:
        report = seed_demo(services.sessions, audit_key=services.settings.audit_key)
    finally:
        services.engine.dispose()
    eploz = report.eploz
    click.echo(
        f"demo data for {len(DEMO_PEOPLE)} people: e-PLOZ accounts {eploz.added} added, "
        f"{eploz.updated} updated, {eploz.unchanged} unchanged; "
        f"UEOZ accounts {report.ueoz_added} added"
    )


@main.command("worker")
@click.option("--once", is_flag=True, help="Search what is due now, expire stale attempts, exit.")
@click.option(
    "--worker-id", "--workers-id", "worker_id", help="Name in the logs (default: random)."
)
@click.option("--interval", default=1.0, show_default=True, help="Seconds between passes.")
@click.pass_obj
def worker(services: Services, once: bool, worker_id: str | None, interval: float) -> None:
    """Run the search worker: find each new attempt's e-PLOZ account."""
    from .search import SearchWorker, stop_on_signals

    search = SearchWorker(services, worker_id=worker_id)
    try:
        if once:
            expired = services.journey.expire_stale()
            report = search.run_once()
            failed = ", ".join(f"{code}: {n}" for code, n in sorted(report.failed.items()))
            click.echo(
                f"searched {report.searched}: found {report.found}, failed {{{failed}}}, "
                f"to retry {report.retried}, superseded {report.superseded}; expired {expired}"
            )
            return
        with stop_on_signals() as stop:
            search.run_forever(stop, poll_interval=interval)
    finally:
        services.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
