"""The ``ueoz-migration`` command: operators, auditors, helpdesk and developers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from .bootstrap import Services
from .config import ConfigError
from .db.engine import snapshot
from .domain.privacy import mask_pesel
from .logs import configure_logging, mask_text


@click.group()
def main() -> None:
    """UEOZ migration service: e-PLOZ accounts into UEOZ at first login through login.gov.pl."""


def _services(
    *, reading_the_log: bool = False, unless: str | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """Hand the command its Services, read from the environment when it runs.

    Not in the group: click runs a group's callback before it parses the subcommand's
    arguments, so ``--help`` (or a mistyped command) would need a whole configuration, and
    in development would write key files into the folder it is run from.

    ``reading_the_log``: the auditors' and helpdesk's commands read a log already written,
    never with a development audit key made up on the spot.

    ``unless``: an option that, given, makes the command need no configuration at all; it
    then gets None for its Services and reads nothing from the environment.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            if unless is not None and kwargs.get(unless) is not None:
                return command(None, *args, **kwargs)
            try:
                services = Services.from_env(existing_audit_key=reading_the_log)
            except ConfigError as error:
                raise click.ClickException(str(error)) from error
            # Standard output is the command's answer (a look-up, an export); the log
            # lines go beside it.
            configure_logging(services.settings, to_stderr=True)
            return command(services, *args, **kwargs)

        return run

    return decorate


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@_services()
def db_upgrade(services: Services, revision: str) -> None:
    """Bring the database to the current schema (or up to REVISION, e.g. 0002); never down."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from .db.engine import shown_url
    from .db.schema import alembic_config, upgrade

    scripts = ScriptDirectory.from_config(alembic_config(services.engine))
    try:
        target = scripts.get_revision(revision)
    except CommandError:
        known = ", ".join(sorted(script.revision for script in scripts.walk_revisions()))
        raise click.BadParameter(
            f"no revision {revision!r} (this release has {known}, and head)",
            param_hint="REVISION",
        ) from None
    with _database(services, doing="upgrade"):
        try:
            upgrade(services.engine, revision)
        except CommandError as error:  # e.g. the database is at a newer release's revision
            raise click.ClickException(f"cannot upgrade the database: {error}") from None
        at = _schema_revision(services)
    where = shown_url(services.engine)
    head = " (head)" if at in scripts.get_heads() else ""
    if at != (target.revision if target is not None else None):
        # alembic's upgrade to a revision behind the database's does nothing, silently.
        click.echo(
            f"database at {at}{head}, past {revision}: nothing done (db upgrade never "
            f"downgrades): {where}"
        )
        return
    click.echo(f"database at {at}{head}: {where}")


def _schema_revision(services: Services) -> str | None:
    """The revision the database's schema is at now."""
    from alembic.runtime.migration import MigrationContext

    with services.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@db.command("revision", hidden=True)
@click.argument("message")
@_services()
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
@click.option(
    "--full",
    is_flag=True,
    help="FILE is the complete export: remove the accounts it does not list, except those "
    "held by a UEOZ account or an open attempt.",
)
@_services()
def eploz_import(services: Services, file: str, full: bool) -> None:
    """Load e-PLOZ's CSV export FILE; a file with any bad line is refused as a whole."""
    from pathlib import Path

    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    from .adapters.eploz import ExportRejected, import_accounts, read_export
    from .journey import utcnow

    # The whole import is one transaction: a refusal or a failure leaves the directory as it
    # was, the removals of --full included.
    nothing = "nothing imported or removed" if full else "nothing imported"
    try:
        with Path(file).open("rb") as source:
            rows = read_export(source)
    except OSError as error:
        raise click.ClickException(
            f"cannot read {file}: {error.strerror or error}; {nothing}"
        ) from None
    except ExportRejected as rejected:
        lines = "\n".join(f"  {problem}" for problem in rejected.problems)
        raise click.ClickException(
            f"{file} refused, {nothing} ({rejected}):\n{lines}"
        ) from rejected
    try:
        if full and not rows:
            # A header with nothing under it is a failed export far more often than an empty
            # e-PLOZ; taken as complete it would remove the whole directory.
            raise click.ClickException(
                f"{file} lists no accounts; with --full that would remove every account: refused"
            )
        report = import_accounts(services.sessions, rows, now=utcnow(), full=full)
    except IntegrityError:
        raise click.ClickException(
            f"{file}: another import changed the directory at the same time; "
            f"{nothing}, run it again"
        ) from None
    except SQLAlchemyError as error:
        # A deadlock with a concurrent import, the database going away or never upgraded…:
        # one line, and no statement parameters (they hold the file's PESELs and addresses),
        # nor the database's message (it may quote a row).
        raise click.ClickException(
            f"{file}: the database did not take the import ({type(error).__name__}); "
            f"{nothing}. Is it reachable and upgraded (ueoz-migration db upgrade)? "
            "Then run it again"
        ) from None
    finally:
        rows.close()
        services.engine.dispose()
    if full:
        # Always said with --full, zeros too: the operator asked for removals.
        absent = (
            f"; not in the file: {report.removed} removed, "
            f"{report.not_in_file} kept (held by a UEOZ account or an open attempt)"
        )
    elif report.not_in_file:
        absent = f"; {_counted(report.not_in_file, 'account')} not in the file kept"
    else:
        absent = ""
    click.echo(
        f"imported {file}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged ({_counted(report.rows, 'row')}){absent}"
    )


def _counted(count: int, noun: str) -> str:
    """``1 row``, ``2 rows``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@eploz.command("seed-demo")
@_services()
def eploz_seed_demo(services: Services) -> None:
    """Load the demo people's e-PLOZ and UEOZ accounts (every search branch); safe to repeat."""
    from .demo import DEMO_PEOPLE, seed_demo

    if services.settings.production:
        raise click.ClickException("seed-demo writes made-up people; refusing in production.")
    with _database(services, doing="write"):
        report = seed_demo(services.sessions, pesel_key=services.settings.pesel_key)
    eploz = report.eploz
    click.echo(
        f"demo data for {len(DEMO_PEOPLE)} people: e-PLOZ accounts {eploz.added} added, "
        f"{eploz.updated} updated, {eploz.unchanged} unchanged; "
        f"UEOZ accounts {report.ueoz_added} added"
    )


def _finite(_context: click.Context, _param: click.Parameter, value: float) -> float:
    if value != value:  # nan
        raise click.BadParameter("must be a number of seconds, not nan")
    return value


#: The worker's and the mail sender's pause between two looks for work when there is none.
_IDLE_INTERVAL = click.option(
    "--interval",
    # FloatRange lets nan through (it compares false with both bounds): a loop without a wait.
    type=click.FloatRange(min=0, max=3600, min_open=True),
    callback=_finite,
    default=0.2,
    show_default=True,
    help="Seconds between idle looks.",
)


def _bind(_context: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from .metrics import parse_bind

    if value is not None:
        try:
            parse_bind(value)
        except ValueError:
            raise click.BadParameter("must be HOST:PORT or PORT, e.g. 127.0.0.1:9471") from None
    return value


#: Where a long-running worker serves its metrics (docs/operations.md, "Metrics").
_METRICS_BIND = click.option(
    "--metrics-bind",
    metavar="HOST:PORT",
    callback=_bind,
    help="Serve Prometheus metrics here (not with --once).",
)


def _serve_metrics(worker: str, bind: str | None) -> None:
    from .metrics import serve_worker

    try:
        serve_worker(worker, bind)
    except OSError as error:
        raise click.ClickException(f"cannot serve metrics on {bind}: {error.strerror}") from None


@main.command("worker")
@click.option("--once", is_flag=True, help="Search what is due now, expire stale attempts, exit.")
@click.option("--worker-id", help="Name in the logs (default: random).")
@_IDLE_INTERVAL
@click.option(
    "--anchors",
    "anchor_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also anchor the log into this folder (audit anchor) every --anchor-every minutes.",
)
@click.option(
    "--anchor-every",
    type=click.FloatRange(min=1, max=24 * 60),
    callback=_finite,
    default=15,
    show_default=True,
    help="Minutes between anchors (with --anchors; one a period among all workers).",
)
@_METRICS_BIND
@_services()
def worker(
    services: Services,
    once: bool,
    worker_id: str | None,
    interval: float,
    anchor_dir: Path | None,
    anchor_every: float,
    metrics_bind: str | None,
) -> None:
    """Run the search worker: find each new attempt's e-PLOZ account."""
    from .signals import stop_on_signals
    from .workers.search import SearchWorker

    search = SearchWorker.from_settings(
        services.settings, services.sessions, services.journey, worker_id=worker_id
    )
    anchors = _anchor_writer(services, anchor_dir, anchor_every)
    if not once:
        _serve_metrics("search", metrics_bind)
        # The loop itself rides out the database going away (it logs, waits and goes on).
        try:
            with stop_on_signals() as stop:
                anchoring = anchors.start(stop) if anchors is not None else None
                search.run_forever(stop, poll_interval=interval)
                if anchoring is not None:
                    anchoring.join()  # an anchor in hand is finished: never half a file
        finally:
            services.engine.dispose()
        return
    with _database(services):
        sweep = services.journey.expire_stale()
        report = search.run_once()
        if anchors is not None:
            anchors.anchor_if_due()
    codes = ", ".join(f"code {code}: {n}" for code, n in sorted(report.failed.items()))
    failed = f"{sum(report.failed.values())}" + (f" ({codes})" if codes else "")
    click.echo(
        f"searched {report.searched}: found {report.found}, failed {failed}, "
        f"to retry {report.retried}, superseded {report.superseded}; expired {sweep.expired}"
    )
    stuck = [
        f"{count} attempt(s) could not be moved on ({event})"
        for count, event in (
            (report.broken, "search.outcome_not_recorded"),
            (sweep.failed, "attempt.expiry_failed"),
        )
        if count
    ]
    if stuck:
        raise click.ClickException("; ".join(stuck) + "; see the log")


def _anchor_writer(services: Services, directory: Path | None, minutes: float):  # type: ignore[no-untyped-def]
    """The worker's anchoring, when it is given a folder; its key is loaded before it starts."""
    from datetime import timedelta

    from .anchors.every import AnchorWriter
    from .journey import utcnow

    if directory is None:
        return None
    key = _anchor_signing_key(services)
    period = timedelta(minutes=minutes)
    return AnchorWriter(services.engine, services.sessions, key, directory, period, utcnow)


def _anchor_signing_key(services: Services):  # type: ignore[no-untyped-def]
    from .anchors.keys import signing_key

    try:
        return signing_key(services.settings)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@main.group()
def retention() -> None:
    """Personal data that expires (RETENTION_DAYS)."""


@retention.command("purge")
@_services()
def retention_purge(services: Services) -> None:
    """Empty the personal data of attempts that ended RETENTION_DAYS ago; safe to repeat."""
    from .journey import utcnow
    from .retention import purge

    with _database(services, doing="write"):
        report = purge(services.sessions, older_than=services.settings.retention, now=utcnow())
    click.echo(report.summary())


# -- the PESEL hashes (pesel rekey) ---------------------------------------------------------


@main.group()
def pesel() -> None:
    """The PESEL hashes that stand for a person in the tables."""


@pesel.command("rekey")
@_services()
def pesel_rekey(services: Services) -> None:
    """Rewrite every PESEL hash from OLD_PESEL_HASH_KEY to PESEL_HASH_KEY, in one transaction.

    Both keys come from the environment. Stop the web instances first (a login started
    meanwhile would hash under the old key); a second run changes nothing.
    """
    from .db.engine import transaction
    from .db.pesel_keys import RekeyRefused, chained_columns, rekey

    raw = services.settings.raw
    old, new = raw.get("OLD_PESEL_HASH_KEY"), raw.get("PESEL_HASH_KEY")
    if not old or not new:
        raise click.ClickException(
            "set OLD_PESEL_HASH_KEY to the key the hashes were made with and PESEL_HASH_KEY "
            "to the new one"
        )
    if old == new:
        raise click.ClickException("OLD_PESEL_HASH_KEY and PESEL_HASH_KEY are the same key")
    try:
        with _database(services, doing="re-key"), transaction(services.sessions) as session:
            report = rekey(session, old.encode(), new.encode())
    except RekeyRefused as refused:
        raise click.ClickException(str(refused)) from None
    for name, done in report.columns.items():
        click.echo(f"{name}: {done.rekeyed} re-keyed, {done.already} under the new key already")
    for column in chained_columns():
        click.echo(f"{column.table.name}.{column.name}: kept (inside the audit chain)")


# -- auditors, helpdesk and developers (audit, flows, helpdesk, diagram) --


@contextmanager
def _database(services: Services, doing: str = "read") -> Iterator[None]:
    """Turn a database that cannot be used into a one-line message; close the pool after.

    ``doing`` is what the command does to it (read, write, upgrade), for the message.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        hint = (
            "reachable"
            if doing == "upgrade"
            else "reachable and upgraded (ueoz-migration db upgrade)"
        )
        raise click.ClickException(
            f"cannot {doing} the database ({reason}); is it {hint}?"
        ) from error
    finally:
        services.engine.dispose()


def _reference(reference: str) -> str:
    """An attempt's id, or its event number as a caller may dictate it (any case, spaces)."""
    from .domain.event_numbers import NotAnEventNumber, normalize_event_number

    try:
        return normalize_event_number(reference)
    except NotAnEventNumber:
        return reference.strip()


def _no_attempt(reference: str) -> click.ClickException:
    # Masked: a PESEL typed where the number belongs is not to be printed back whole.
    return click.ClickException(f"no attempt has the id or event number {mask_text(reference)!r}")


def _cannot_write(path: object, error: OSError) -> click.ClickException:
    """One line for a file that could not be written: no such folder, no permission, disk full."""
    return click.ClickException(f"cannot write {path}: {error.strerror or error}")


def _attempt_scope(services: Services, reference: str | None, all_: bool) -> list[str] | None:
    """Resolve MIGRATION_…|ATTEMPT|--all to attempt ids (None meaning every attempt).

    A reference whose attempt row is gone while its log rows remain resolves to the id those
    rows carry: checked, they report the attempt missing, as the whole log's check does.
    """
    from .audit.log import find_attempt, orphaned_attempt_id

    if all_ and reference:
        raise click.UsageError("give either an attempt (id or MIGRATION_ number) or --all")
    if all_ or reference is None:
        return None
    named = _reference(reference)
    with snapshot(services.sessions) as session:
        attempt = find_attempt(session, named)
        attempt_id = attempt.id if attempt is not None else orphaned_attempt_id(session, named)
    if attempt_id is None:
        raise _no_attempt(reference)
    return [attempt_id]


def _from_export(export: TextIO, check: Callable[[TextIO], Any]) -> Any:
    """Run an offline check over an export file; a file that is not one is a one-line error."""
    from .audit.export import ExportUnreadable

    try:
        return check(export)
    except ExportUnreadable as unreadable:
        raise click.ClickException(f"{export.name}: {unreadable}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{export.name} is not UTF-8 text") from None


def _print_report(report, *, then_exit: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Print an audit report; exit 1 when it found a problem (unless more is to be printed)."""
    if not report.ok:
        click.echo(f"FIRST BROKEN LINK: {report.first}")
        for finding in report.findings[1:20]:
            click.echo(f"  also: {finding}")
        if report.broken_attempts > 20:
            click.echo(f"  … and {report.broken_attempts - 20} more attempt(s)")
    for note in report.notes:
        click.echo(note)
    click.echo(report.summary())
    if then_exit and not report.ok:
        sys.exit(1)


def _text(_context: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Refuse an argument that is not text (bytes a terminal could not decode), unquoted."""
    if value is not None and not value.isprintable():
        # Not echoed: it may be a PESEL typed with a stray byte.
        raise click.BadParameter("is not an event number or an attempt id (unprintable text)")
    return value


@main.group()
def audit() -> None:
    """The transition log, for auditors: show, replay, verify, export, compare, anchor."""


def _export_option(what: str) -> Callable[[Callable[..., Any]], Any]:
    return click.option(
        "--export",
        type=click.File("r", encoding="utf-8"),
        help=f"{what} this audit export file instead, without the database.",
    )


def _check_export(
    export: TextIO, reference: str | None, all_: bool, check: Callable[[TextIO], Any]
) -> None:
    """Run an offline check over the whole of an export file and print its report."""
    if reference is not None or all_:
        raise click.UsageError("--export checks the whole file: name no attempt, no --all")
    _print_report(_from_export(export, check))


@audit.command("verify")
@click.argument("reference", required=False, metavar="[MIGRATION_…|ATTEMPT]", callback=_text)
@click.option("--all", "all_", is_flag=True, help="Every attempt (the default).")
@_export_option("Check the chain inside")
@click.option(
    "--anchors",
    "anchor_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also check that the log still extends every anchor in this folder (audit anchor).",
)
@_services(reading_the_log=True)
def audit_verify(
    services: Services,
    reference: str | None,
    all_: bool,
    export: TextIO | None,
    anchor_dir: Path | None,
) -> None:
    """Check the log's hash chain; name the first broken link (exit 1) or summarise (exit 0)."""
    from .audit.verify import VerifyAborted, verify_chain, verify_export

    if anchor_dir is not None and reference is not None:
        raise click.UsageError("--anchors checks the whole log: name no attempt")
    public = _anchor_public_key(services, anchor_dir) if anchor_dir is not None else None
    if export is not None:
        key = services.settings.audit_key
        if anchor_dir is None:
            _check_export(export, reference, all_, lambda lines: verify_export(lines, key))
            return
        if reference is not None or all_:
            raise click.UsageError("--export checks the whole file: name no attempt, no --all")
        report = _from_export(export, lambda lines: verify_export(lines, key, anchored=True))
        _print_both(report, _anchors_of_export(export, anchor_dir, public))
        return
    with _database(services):
        scope = _attempt_scope(services, reference, all_)
        with snapshot(services.sessions) as session:
            try:
                report = verify_chain(session, services.settings.audit_key, scope)
            except VerifyAborted as aborted:
                raise click.ClickException(str(aborted)) from None
        if anchor_dir is None:
            _print_report(report)
            return
        from .anchors.check import NoAnchors, check_log

        with snapshot(services.sessions) as session:
            try:
                anchored = check_log(session, anchor_dir, public)
            except NoAnchors as none:
                raise click.ClickException(str(none)) from None
    _print_both(report, anchored)


def _print_both(report, anchored) -> None:  # type: ignore[no-untyped-def]
    """Print the chain's report and the anchors'; exit 1 when either found a problem."""
    _print_report(report, then_exit=False)
    for line in anchored.lines():
        click.echo(line)
    if not (report.ok and anchored.ok):
        sys.exit(1)


def _anchor_public_key(services: Services, directory: Path):  # type: ignore[no-untyped-def]
    """The key anchors are checked with; refused before the log is read when there are none."""
    from .anchors.document import FILE_PATTERN
    from .anchors.keys import verifying_key

    if not any(directory.glob(FILE_PATTERN)):
        raise click.ClickException(f"{directory} holds no anchor ({FILE_PATTERN})")
    try:
        return verifying_key(services.settings)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _anchors_of_export(export: TextIO, directory: Path, public):  # type: ignore[no-untyped-def]
    """Check the anchors against the export file the chain check has read (read again)."""
    from .anchors.check import NoAnchors, check_export
    from .anchors.leaves import NoRowIds

    if not export.seekable():
        raise click.UsageError("--export with --anchors reads the file twice: give a file")
    export.seek(0)
    try:
        return _from_export(export, lambda lines: check_export(lines, directory, public))
    except (NoAnchors, NoRowIds) as problem:
        raise click.ClickException(f"{export.name}: {problem}") from None


@audit.command("replay")
@click.argument("reference", required=False, metavar="MIGRATION_…|ATTEMPT", callback=_text)
@click.option("--all", "all_", is_flag=True, help="Every attempt.")
@_export_option("Replay the attempts of")
@_services(reading_the_log=True, unless="export")  # an export replays with no key, no database
def audit_replay(
    services: Services | None, reference: str | None, all_: bool, export: TextIO | None
) -> None:
    """Re-run the logged events through the flow version in force; report the first divergence."""
    from .audit.log import read_log, story
    from .audit.replay import replay_export, replay_log

    if export is not None:
        _check_export(export, reference, all_, replay_export)
        return
    assert services is not None  # given whenever --export is not
    if reference is None and not all_:
        raise click.UsageError("name an attempt (its id or MIGRATION_ number) or give --all")
    with _database(services):
        scope = _attempt_scope(services, reference, all_)
        with snapshot(services.sessions) as session:
            report = replay_log(session, scope)
            # One attempt: its way through the flow, and where the person went at the end.
            way = story(read_log(session, scope[0])) if scope and len(scope) == 1 else None
    _print_report(report)
    if way is not None and report.ok:
        click.echo(f"path: {way}")


@audit.command("show")
@click.argument("reference", metavar="MIGRATION_…|ATTEMPT", callback=_text)
@_services(reading_the_log=True)
def audit_show(services: Services, reference: str) -> None:
    """Print one attempt's log as a table."""
    from .audit.log import find_attempt, log_table, orphaned_attempt_id, read_log

    named = _reference(reference)
    with _database(services), snapshot(services.sessions) as session:
        attempt = find_attempt(session, named)
        if attempt is None:
            orphan = orphaned_attempt_id(session, named)
            if orphan is None:
                raise _no_attempt(reference)
            raise click.ClickException(
                f"no attempt has the id or event number {mask_text(reference)!r}, but the log "
                f"holds rows of attempt {orphan}: its attempt row was deleted "
                f"(audit verify {orphan})"
            )
        rows = read_log(session, attempt.id)
    click.echo(
        f"attempt {attempt.id}  state {attempt.state}  flow version {attempt.flow_version[:12]}…"
        + (
            f"  event {attempt.event_number} code {attempt.event_code}"
            if attempt.event_number
            else ""
        )
    )
    click.echo(log_table(rows))


@audit.command("export")
@click.option(
    "--attempt",
    "reference",
    metavar="MIGRATION_…|ATTEMPT",
    callback=_text,
    help="Only this attempt.",
)
@click.option("--output", type=click.Path(dir_okay=False), help="File (default: stdout).")
@_services(reading_the_log=True)
def audit_export(services: Services, reference: str | None, output: str | None) -> None:
    """Write the log as JSON lines: every chained field of each row, with its hashes."""
    from .audit.export import export_log

    with _database(services):
        scope = _attempt_scope(services, reference, False)
        with snapshot(services.sessions) as session:
            if output is None:
                export_log(session, sys.stdout, scope)
                return
            try:
                with open(output, "w", encoding="utf-8") as out:
                    count = export_log(session, out, scope)
            except OSError as error:
                raise _cannot_write(output, error) from None
    click.echo(f"exported {count} row(s) to {output}", err=True)


@audit.command("compare")
@click.argument("export", type=click.File("r", encoding="utf-8"))
@_services(reading_the_log=True)
def audit_compare(services: Services, export: TextIO) -> None:
    """Check that every row of an earlier export is still in the log, unchanged."""
    from .audit.compare import compare_with_export

    with _database(services), snapshot(services.sessions) as session:
        report = _from_export(export, lambda lines: compare_with_export(session, lines))
    _print_report(report)


@audit.command("anchor")
@click.option(
    "--output",
    "directory",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder to write the anchor into: append-only, out of the database's reach.",
)
@_services(reading_the_log=True)
def audit_anchor(services: Services, directory: Path) -> None:
    """Sign the log's head and write it into a new file in the folder, named by time and size."""
    from .anchors.leaves import LogBusy
    from .anchors.take import take_anchor
    from .journey import utcnow

    key = _anchor_signing_key(services)
    with _database(services, doing="write"):
        try:
            taken = take_anchor(services.engine, services.sessions, key, directory, utcnow())
        except LogBusy as busy:
            raise click.ClickException(str(busy)) from None
        except FileExistsError as exists:
            raise click.ClickException(
                f"{exists.filename} already exists: an anchor is never written over another; "
                "run it again in a second"
            ) from None
        except OSError as error:
            raise _cannot_write(error.filename or directory, error) from None
    assert taken is not None  # taken whenever no recent one is asked to be skipped
    anchor = taken.anchor
    click.echo(
        f"anchored {anchor.size} row(s) in {taken.path} (root {anchor.root.hex()[:16]}…, key "
        f"{anchor.key[:16]}…; {taken.hashed} row(s) hashed anew in {taken.seconds:.3f} s)"
    )


@main.group()
def helpdesk() -> None:
    """The helpdesk's tools."""


@helpdesk.command("lookup")
@click.argument("event_number", metavar="MIGRATION_…")
@click.option(
    "--pesel-last3", required=True, metavar="NNN", help="The caller's last 3 PESEL digits."
)
@_services(reading_the_log=True)
def helpdesk_lookup(services: Services, event_number: str, pesel_last3: str) -> None:
    """Show the attempt behind an event number once the caller's PESEL digits agree."""
    from .helpdesk import NO_MATCH, LookupInputError, describe, lookup

    try:
        with _database(services):
            view = lookup(services.sessions, event_number, pesel_last3)
    except LookupInputError as error:
        raise click.UsageError(str(error)) from error
    if view is None:
        click.echo(NO_MATCH, err=True)
        sys.exit(1)
    with _database(services):
        names = {client.id: client.name for client in services.clients.all()}
    click.echo(describe(view, names))


@main.group()
def staff() -> None:
    """Who may use the staff console, and in which roles (helpdesk, auditor, operator)."""


def _staff_pesel(_context: click.Context, _param: click.Parameter, value: str) -> str:
    """A PESEL as the node gives it: 11 digits with a valid checksum. Never echoed."""
    from stdnum.pl import pesel

    if not pesel.is_valid(value.strip()):
        raise click.BadParameter("is not a valid PESEL (11 digits, checksum)")
    return value.strip()


def _role_options(command: Callable[..., Any]) -> Callable[..., Any]:
    from .console.staff import Role

    command = click.option(
        "--role", required=True, type=click.Choice([role.value for role in Role])
    )(command)
    return click.option(
        "--pesel", required=True, callback=_staff_pesel, help="The staff member's PESEL."
    )(command)


def _who() -> str:
    """Who grants or revokes: the account running the command, as the shell knows it."""
    import getpass

    try:
        return f"shell:{getpass.getuser()}"
    except (KeyError, OSError):
        return "shell"


def _change_role(services: Services, pesel: str, role: str, *, grant: bool) -> bool:
    """Grant or revoke ``role`` in one transaction; whether anything changed."""
    from .console.staff import Role, Staff
    from .journey import utcnow

    staff = Staff(services.sessions, services.settings.pesel_key)
    change = staff.grant if grant else staff.revoke
    with _database(services, doing="write"):
        return change(pesel, Role(role), by=_who(), now=utcnow())


@staff.command("grant")
@_role_options
@_services()
def staff_grant(services: Services, pesel: str, role: str) -> None:
    """Grant a role to the person with this PESEL; they sign in through login.gov.pl."""
    granted = _change_role(services, pesel, role, grant=True)
    click.echo(f"{mask_pesel(pesel)} {'granted' if granted else 'already holds'} {role}")


@staff.command("revoke")
@_role_options
@_services()
def staff_revoke(services: Services, pesel: str, role: str) -> None:
    """Revoke a role; it takes effect at the staff member's next request."""
    if not _change_role(services, pesel, role, grant=False):
        raise click.ClickException(f"{mask_pesel(pesel)} does not hold {role}")
    click.echo(f"{mask_pesel(pesel)} no longer holds {role}")


@staff.command("list")
@click.option("--all", "all_", is_flag=True, help="Revoked roles too.")
@_services()
def staff_list(services: Services, all_: bool) -> None:
    """List the roles held (PESEL masked), who granted each and when."""
    from .audit.log import format_time, text_table
    from .console.staff import Staff

    with _database(services):
        grants = Staff(services.sessions, services.settings.pesel_key).grants(with_revoked=all_)
    if not grants:
        click.echo("no staff roles granted")
        return
    header = ("staff", "PESEL", "role", "granted", "by", *(("revoked", "by") if all_ else ()))
    rows = [
        (
            str(grant.staff_id),
            grant.pesel,
            grant.role,
            format_time(grant.granted_at),
            grant.granted_by,
            *(
                (
                    format_time(grant.revoked_at) if grant.revoked_at else "-",
                    grant.revoked_by or "-",
                )
                if all_
                else ()
            ),
        )
        for grant in grants
    ]
    click.echo("\n".join(text_table(header, rows)))


@main.group()
def flows() -> None:
    """The flow versions attempts have run on: list, show, check a release against them."""


@flows.command("list")
@_services(reading_the_log=True)
def flows_list(services: Services) -> None:
    """Every flow version stored, with its attempts and whether this release runs it."""
    from sqlalchemy import func, select

    from .db.models import Attempt, FlowVersion
    from .journey import FlowNotRunnable, load_runnable
    from .web.migration import check_served

    with _database(services), snapshot(services.sessions) as session:
        versions = session.execute(
            select(FlowVersion.version, FlowVersion.source, FlowVersion.first_used_at).order_by(
                FlowVersion.first_used_at
            )
        ).all()
        counts = {
            version: (total, open_)
            for version, total, open_ in session.execute(
                select(
                    Attempt.flow_version,
                    func.count(),
                    func.count(Attempt.open_pesel_key),
                ).group_by(Attempt.flow_version)
            )
        }
    current = services.flow.version
    if not versions:
        click.echo("no flow version stored yet: no attempt has started")
        return
    click.echo(f"{'version':<12}  {'first used (UTC)':<19}  {'attempts':>8}  {'open':>6}  here")
    for version, source, first_used in versions:
        total, open_ = counts.get(version, (0, 0))
        try:
            check_served(load_runnable(version, source))
            here = "runs" + (" (this release's own)" if version == current else "")
        except FlowNotRunnable as problem:
            here = f"cannot run: {problem.reason}"
        click.echo(
            f"{version[:12]}  {first_used:%Y-%m-%d %H:%M:%S}  {total:>8}  {open_:>6}  {here}"
        )


@flows.command("show")
@click.argument("version", callback=_text)
@_services(reading_the_log=True)
def flows_show(services: Services, version: str) -> None:
    """Print a stored flow version's definition, as it ran (a prefix of 8+ digits will do)."""
    from sqlalchemy import select

    from .db.models import FlowVersion

    if len(version) < 8:
        raise click.BadParameter("give at least 8 digits of the version", param_hint="VERSION")
    with _database(services), snapshot(services.sessions) as session:
        found = session.execute(
            select(FlowVersion.version, FlowVersion.source).where(
                FlowVersion.version.startswith(version.lower(), autoescape=True)
            )
        ).all()
    if len(found) != 1:
        raise click.ClickException(
            f"{len(found)} stored flow versions start with {version!r}; "
            "`ueoz-migration flows list` lists them"
        )
    click.echo(found[0].source, nl=False)


@flows.command("check")
@_services(reading_the_log=True)
def flows_check(services: Services) -> None:
    """Exit 1 unless this release can run every open attempt's flow version (before a rollout)."""
    from .web.migration import flows_not_served

    with _database(services):
        problems = flows_not_served(services.journey)
        open_versions = services.journey.open_flow_versions()
    if problems:
        raise click.ClickException(
            "; ".join(problems) + ' (docs/operations.md, "Changing the flow")'
        )
    click.echo(
        f"this release runs every open attempt's flow version: "
        f"{_counted(sum(open_versions.values()), 'open attempt')} on "
        f"{_counted(len(open_versions), 'flow version')}"
    )


@main.command("diagram")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg"]),
    default="mermaid",
    show_default=True,
)
@click.option("--output", type=click.Path(dir_okay=False), help="File, or - for stdout.")
@click.option(
    "--flow",
    "flow_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Another flow file, e.g. an old version from `flows show` (printed unless --output).",
)
def diagram(fmt: str, output: str | None, flow_file: str | None) -> None:
    """Render the flow; with no --output, Mermaid (re)writes docs/state-diagram.md."""
    from pathlib import Path

    from statemachine.contrib.diagram.graphviz import GraphvizError
    from statemachine.exceptions import InvalidDefinition
    from yaml import YAMLError

    from .diagram import DOC_PATH, render, state_diagram_page
    from .flow import load_flow_file

    # The flow file alone: no settings, so no secret and no database is needed.
    try:
        flow = load_flow_file(Path(flow_file) if flow_file else None)
    except (InvalidDefinition, YAMLError, ValueError, TypeError, AttributeError) as error:
        # ValueError covers a file that is not UTF-8; TypeError and AttributeError, YAML of
        # the wrong shape (the loader expects mappings where it finds lists or numbers).
        reason = " ".join(str(error).split())  # YAML's own message runs over lines
        raise click.ClickException(f"{flow_file} is not a flow definition: {reason}") from None

    if output is None and fmt == "mermaid" and flow_file is None:
        if not DOC_PATH.parent.is_dir():
            raise click.ClickException(
                f"no {DOC_PATH.parent}/ folder here: run this from the repository root, "
                "or give --output"
            )
        try:
            DOC_PATH.write_text(state_diagram_page(flow), encoding="utf-8")
        except OSError as error:
            raise _cannot_write(DOC_PATH, error) from None
        click.echo(f"wrote {DOC_PATH} (flow version {flow.version[:12]}…)")
        return
    try:
        data = render(flow, fmt)
    except GraphvizError as error:
        raise click.ClickException(
            f"SVG needs Graphviz's `dot` program (Debian: apt-get install graphviz): {error}"
        ) from error
    if output is None or output == "-":
        click.echo(data, nl=False)
    else:
        try:
            Path(output).write_bytes(data)
        except OSError as error:
            raise _cannot_write(output, error) from None
        click.echo(f"wrote {output} ({fmt})")


# -- the OpenID Provider: domain systems, signing keys, logout delivery ------------------


@main.group()
def clients() -> None:
    """The domain systems that sign in through UEOZ (OpenID Connect clients)."""


@clients.command("add")
@click.argument("client_id", metavar="ID")
@click.option("--name", required=True, help="The domain system's name, as people know it.")
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, required=True, help="Exact address; repeat."
)
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True)
@click.option("--backchannel-logout-uri", help="Where logout tokens are posted.")
@click.option("--initiate-login-uri", help="Where the domain system starts a sign-in.")
@click.option("--jwks-uri", help="Its public keys (private_key_jwt), fetched from here.")
@click.option(
    "--jwks-file",
    type=click.File("r", encoding="utf-8"),
    help="Its public keys (private_key_jwt), as a JWKS file.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A scope it may ask for (openid, profile, email, roles, pesel); repeat. "
    "Default: openid profile email roles.",
)
@click.option(
    "--public-subject",
    is_flag=True,
    help="Give it the same sub as the other public-subject clients (default: pairwise).",
)
@click.option(
    "--id-token-signing-alg",
    type=click.Choice(["ES256", "RS256"]),
    default="ES256",
    show_default=True,
    help="How its ID tokens are signed.",
)
@_services()
def clients_add(
    services: Services,
    client_id: str,
    name: str,
    redirect_uris: tuple[str, ...],
    post_logout_redirect_uris: tuple[str, ...],
    backchannel_logout_uri: str | None,
    initiate_login_uri: str | None,
    jwks_uri: str | None,
    jwks_file: TextIO | None,
    scopes: tuple[str, ...],
    public_subject: bool,
    id_token_signing_alg: str,
) -> None:
    """Register a domain system; print its client_secret once (none for private_key_jwt)."""
    import json

    from .oidc.clients import DEFAULT_SCOPES, ClientError, Registration

    try:
        jwks = json.load(jwks_file) if jwks_file is not None else None
    except ValueError as error:
        raise click.ClickException(f"{jwks_file.name} is not JSON: {error}") from None
    registration = Registration(
        id=client_id,
        name=name,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout_redirect_uris,
        backchannel_logout_uri=backchannel_logout_uri,
        initiate_login_uri=initiate_login_uri,
        jwks=jwks,
        jwks_uri=jwks_uri,
        scopes=scopes or DEFAULT_SCOPES,
        public_subject=public_subject,
        id_token_alg=id_token_signing_alg,
    )
    try:
        with _database(services, doing="write"):
            secret = services.clients.add(registration)
    except ClientError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"client_id: {client_id}")
    if secret is not None:
        click.echo(f"client_secret: {secret}")
        click.echo("(shown this once: only its hash is kept)", err=True)


@clients.command("list")
@_services()
def clients_list(services: Services) -> None:
    """List the registered domain systems."""
    with _database(services):
        registered = services.clients.all()
    for client in registered:
        click.echo(
            f"{client.id}\t{client.name}\t{client.auth_method}\t{client.subject_type}\t"
            f"scopes: {' '.join(client.scopes)}\tredirect: {' '.join(client.redirect_uris)}"
        )
    if not registered:
        click.echo("no domain system is registered (ueoz-migration clients add)", err=True)


@clients.command("rotate-secret")
@click.argument("client_id", metavar="ID")
@_services()
def clients_rotate_secret(services: Services, client_id: str) -> None:
    """Give a domain system a new client_secret; the old one stops working at once."""
    from .oidc.clients import ClientError

    try:
        with _database(services, doing="write"):
            secret = services.clients.rotate_secret(client_id)
    except ClientError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"client_id: {client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo("(shown this once: only its hash is kept)", err=True)


@clients.command("remove")
@click.argument("client_id", metavar="ID")
@_services()
def clients_remove(services: Services, client_id: str) -> None:
    """Remove a domain system: its sign-ins, codes and tokens stop working at once."""
    from .oidc.clients import ClientError

    try:
        with _database(services, doing="write"):
            services.clients.remove(client_id)
    except ClientError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"removed {client_id}")


@main.group()
def keys() -> None:
    """The ID token signing keys (ES256) in OIDC_KEYS_DIR."""


@keys.command("list")
@_services()
def keys_list(services: Services) -> None:
    """List the keys: which signs now, which waits to, until when the others are published."""
    from datetime import UTC, datetime

    from .oidc.keys import SigningKeys

    signing = SigningKeys(services.settings.oidc_keys_dir)
    entries = signing.entries()
    now = datetime.now(UTC)
    current = {
        signing.signing_key(alg).kid
        for alg in {entry.alg for entry in entries if entry.signs_from <= now}
    }
    for entry in entries:
        if entry.kid in current:
            state = "signs now"
        elif entry.signs_from > now:
            state = f"published, signs from {entry.signs_from:%Y-%m-%d %H:%M:%S} UTC"
        elif entry.published(now):
            state = f"published until {entry.published_until:%Y-%m-%d %H:%M:%S} UTC"
        else:
            state = "retired"
        click.echo(
            f"{entry.kid}\t{entry.alg}\tcreated {entry.created_at:%Y-%m-%d %H:%M:%S} UTC\t{state}"
        )
    if not entries:
        raise click.ClickException(
            f"{services.settings.oidc_keys_dir} holds no signing key (ueoz-migration keys rotate)"
        )


@keys.command("rotate")
@click.option(
    "--publish-ahead-minutes",
    type=click.FloatRange(min=0, max=24 * 60),
    default=10.0,
    show_default=True,
    help="How long the new key is published before it signs (every instance and domain "
    "system must have seen it by then).",
)
@click.option(
    "--overlap-hours",
    type=click.FloatRange(min=0, max=24 * 30),
    default=24.0,
    show_default=True,
    help="How long the key it replaces stays published after that.",
)
@_services()
def keys_rotate(services: Services, publish_ahead_minutes: float, overlap_hours: float) -> None:
    """Make a new signing key (the first one too); the old one stays published a while."""
    from datetime import timedelta

    from .oidc.keys import SigningKeys

    folder = services.settings.oidc_keys_dir
    try:
        entries = SigningKeys(folder).rotate(
            publish_ahead=timedelta(minutes=publish_ahead_minutes),
            overlap=timedelta(hours=overlap_hours),
        )
    except OSError as error:
        raise _cannot_write(folder, error) from None
    for entry in entries:
        click.echo(
            f"new {entry.alg} key {entry.kid}: published now, signs from "
            f"{entry.signs_from:%Y-%m-%d %H:%M:%S} UTC ({folder})"
        )


@main.command("logout-sender")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@_IDLE_INTERVAL
@_METRICS_BIND
@_services()
def logout_sender(
    services: Services, once: bool, interval: float, metrics_bind: str | None
) -> None:
    """Deliver back-channel logouts to the domain systems when a UEOZ session ends."""
    from .signals import stop_on_signals
    from .workers.logouts import LogoutSender

    settings = services.settings
    sender = LogoutSender(
        services.sessions,
        keys=services.signing_keys,
        registry=services.clients,
        issuer=settings.base_url,
        timeout=settings.backchannel_timeout.total_seconds(),
    )
    if once:
        with _database(services, doing="use"):
            report = sender.send_due()
        click.echo(f"sent {report.sent}, to retry {report.retried}, failed {report.failed}")
        if report.failed:
            raise click.ClickException(
                f"{report.failed} logout(s) failed for good; see the log "
                "(oidc.backchannel_logout_failed)"
            )
        return
    _serve_metrics("logout", metrics_bind)
    try:
        with stop_on_signals() as stop:
            sender.run(stop, interval=interval)
    finally:
        services.engine.dispose()


# -- mail and the development stack -------------------------------------------------------


@main.command("mail-sender")
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@_IDLE_INTERVAL
@_METRICS_BIND
@_services()
def mail_sender(services: Services, once: bool, interval: float, metrics_bind: str | None) -> None:
    """Deliver the outbox's e-mail (SMTP, or the Maildir on the embedded default)."""
    from .signals import stop_on_signals
    from .workers.outbox import OutboxSender

    try:
        sender = OutboxSender.from_settings(services.settings, services.sessions)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    if once:
        with _database(services, doing="use"):
            report = sender.send_due()
        click.echo(f"sent {report.sent}, to retry {report.retried}, failed {report.failed}")
        if report.failed:
            raise click.ClickException(
                f"{report.failed} message(s) failed for good; see the log (mail.failed)"
            )
        return
    _serve_metrics("mail", metrics_bind)
    # The loop itself rides out the database going away (it logs, waits and goes on).
    try:
        with stop_on_signals() as stop:
            sender.run(stop, interval=interval)
    finally:
        services.engine.dispose()


@main.command("dev")
@_services()
def dev(services: Services) -> None:
    """Run the embedded default: database, demo data, web service, stand-in node, workers."""
    from .devstack import DevStackError, run_stack

    try:
        code = run_stack(services.settings)
    except DevStackError as error:
        raise click.ClickException(str(error)) from error
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
