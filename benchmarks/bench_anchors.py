"""Benchmark the anchors: anchoring a long log, checking it against many anchors, and after.

Run it from the repository root (``make bench`` does):

    .venv/bin/python benchmarks/bench_anchors.py \\
        --database-url sqlite --database-url postgresql://postgres@127.0.0.1:55433/postgres \\
        --log-rows 1000000 --anchors 100 --rounds 3

For each database, a log of ``--log-rows`` rows is written in bulk by bench_core's
:func:`write_bulk_log` (rows chained as the journey chains them), in ``--anchors`` equal
parts with an anchor taken after each, as the worker would take them while the log grows.
Then, each ``--rounds`` times:

- *anchor, whole log*: the kept head is deleted, so ``take_anchor`` reads and hashes every
  row, as the first anchor of an existing log does;
- *check against N anchors*: ``check_log`` reads every row once, builds the tree and proves
  each anchor's consistency with it (what ``audit verify --anchors`` adds to the chain's
  check, which is timed beside it for comparison: ``verify_chain`` as the CLI runs it);
- *anchor, a few new rows*: ``--new-rows`` rows are added, and ``take_anchor`` goes on from
  the last anchor's compact range;
- *floor*: reading the leaves' four columns of every row, in id order, and nothing else.

Medians of the rounds; only the Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench_core import prepare_database, progress, quiet_logs, services_for, write_bulk_log
from sqlalchemy import select, text

from ueoz_migration.anchors.check import check_log
from ueoz_migration.anchors.keys import signing_key
from ueoz_migration.anchors.take import take_anchor
from ueoz_migration.audit.log import LOG, plain_rows
from ueoz_migration.audit.verify import verify_chain
from ueoz_migration.bootstrap import Services
from ueoz_migration.journey import utcnow


def timed(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def read_leaf_columns(services: Services) -> int:
    """The floor: every row's id, attempt, seq and hash, in id order, read and dropped."""
    statement = select(LOG.c.id, LOG.c.attempt_id, LOG.c.seq, LOG.c.hash).order_by(LOG.c.id)
    with services.sessions() as session:
        return sum(1 for _ in plain_rows(session, statement, "bench_floor"))


def bench(services: Services, folder: Path, args: argparse.Namespace) -> list[tuple]:
    key = signing_key(services.settings)
    anchors = folder / "anchors"
    anchors.mkdir()
    whole = folder / "whole"
    whole.mkdir()
    start, seconds_on = utcnow(), itertools.count()

    def anchor(into: Path):  # type: ignore[no-untyped-def]
        # A second apart each, so that anchors taken in a burst get names of their own.
        now = start + timedelta(seconds=next(seconds_on))
        return take_anchor(services.engine, services.sessions, key, into, now)

    part = args.log_rows // args.anchors
    written, grown = 0, []
    for index in range(args.anchors):
        written += write_bulk_log(
            services, part if index < args.anchors - 1 else args.log_rows - written
        )
        seconds, taken = timed(anchor, anchors)
        grown.append(seconds)
        if index % 10 == 9:
            progress(
                f"{written:,} rows, {index + 1} anchors "
                f"(last {seconds:.3f} s, {taken.hashed:,} hashed)"
            )
    rows = written
    results: dict[str, list[float]] = {
        "floor": [],
        "whole": [],
        "check": [],
        "chain": [],
        "new": [],
    }
    added = []
    for round_ in range(args.rounds):
        results["floor"].append(timed(read_leaf_columns, services)[0])
        with services.engine.begin() as connection:
            connection.execute(text("DELETE FROM log_anchors"))
        seconds, taken = timed(anchor, whole)
        assert taken.hashed == taken.anchor.size, "the whole log was to be hashed"
        results["whole"].append(seconds)
        with services.sessions() as session:
            seconds, report = timed(check_log, session, anchors, key.public_key())
        if not report.ok or report.anchors < args.anchors:
            raise SystemExit(f"the log does not pass its anchors: {report.lines()}")
        results["check"].append(seconds)
        with services.sessions() as session:
            seconds, chain = timed(verify_chain, session, services.settings.audit_key)
        if not chain.ok:
            raise SystemExit(f"the bulk log does not pass verify: {chain.first}")
        results["chain"].append(seconds)
        rows += write_bulk_log(services, args.new_rows)
        seconds, taken = timed(anchor, whole)
        results["new"].append(seconds)
        added.append(taken.hashed)
        progress(
            f"round {round_ + 1}: floor {results['floor'][-1]:.3f} s, "
            f"whole {results['whole'][-1]:.3f} s, "
            f"check {results['check'][-1]:.3f} s, chain {results['chain'][-1]:.3f} s, "
            f"new {results['new'][-1]:.3f} s ({taken.hashed} hashed)"
        )
    shutil.rmtree(whole)
    count = report.anchors
    return [
        (f"anchor the whole log ({written:,} rows), no kept head", results["whole"], 10.0),
        (f"check {written:,}+ rows against {count} anchors", results["check"], 10.0),
        (
            "anchor the rows added since the last anchor ("
            + (f"{min(added)}" if min(added) == max(added) else f"{min(added)}–{max(added)}")
            + " rows)",
            results["new"],
            None,
        ),
        (
            f"anchor while the log grew, {part:,} new rows each ({args.anchors} anchors)",
            grown,
            None,
        ),
        (
            f"floor: read the leaves' columns of {written:,}+ rows, in id order",
            results["floor"],
            None,
        ),
        (
            f"for comparison: the chain's check of {written:,}+ rows (verify_chain, as the CLI)",
            results["chain"],
            None,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", action="append", dest="urls")
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--anchors", type=int, default=100)
    parser.add_argument(
        "--new-rows", type=int, default=10, help="rows added before the last anchor (at least)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    quiet_logs()
    table = []
    with tempfile.TemporaryDirectory(prefix="ueoz-bench-anchors-") as tmp:
        folder = Path(tmp)
        for spec in args.urls or ["sqlite"]:
            db = prepare_database(spec, folder)
            place = folder / db.label
            place.mkdir()
            try:
                services = services_for(db.url, place)
                for measure, values, aim in bench(services, place, args):
                    table.append((db.label, measure, values, aim))
                services.engine.dispose()
            finally:
                db.drop()
    progress(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print("| database | measure | median | unit | rounds | aim | median / aim |")
    print("|---|---|---:|---|---|---:|---:|")
    for label, measure, values, aim in table:
        value = statistics.median(values)
        shown = (
            ", ".join(f"{v:.3f}" for v in values)
            if len(values) <= 5
            else f"{min(values):.3f}–{max(values):.3f} ({len(values)})"
        )
        target = f"{aim:.0f}" if aim else "–"
        ratio = f"{value / aim:.2f} (≤ 1 meets it)" if aim else "–"
        print(f"| {label} | {measure} | {value:.3f} | s | {shown} | {target} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
