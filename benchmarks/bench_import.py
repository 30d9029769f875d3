"""Benchmark `ueoz-migration eploz import` on a national-size export: its time and peak memory.

Run it from the repository root (``make bench`` does):

    .venv/bin/python benchmarks/bench_import.py \
        --database-url postgresql://postgres@127.0.0.1:55433/postgres --rows 2000000

It writes an export of ``--rows`` valid lines (distinct logins, valid PESELs, Polish names,
an address and two grants each, CRLF line ends, as e-PLOZ writes them) into a temporary
folder, creates a throw-away database on the server, migrates it, and runs the command as
an operator would, in a process of its own:

- *new directory*: the export into the empty table (every row added);
- *the same export again*: every row unchanged (the nightly re-import);
- *the command alone*: ``eploz import --help``, what the interpreter and the service's
  modules weigh before any file is read.

Each is timed on the wall clock, and its peak memory is the process's peak resident set size
as GNU time reports it (``/usr/bin/time -f %M``: the whole process, interpreter included).
The aim (docs/performance.md): 2,000,000 rows imported in under 5 minutes, with a peak under
200 MB. Only the Markdown table goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from bench_core import AUDIT_KEY, prepare_database


@dataclass
class Run:
    seconds: float  # wall clock
    cpu_seconds: float  # the command's own, user and system
    megabytes: float  # peak resident set size
    said: str  # its last line of output


AIM_SECONDS = 300
AIM_MEGABYTES = 200
GIVEN = ("Anna", "Jan", "Małgorzata", "Piotr", "Zofia", "Łukasz", "Katarzyna", "Grzegorz")
FAMILY = ("Nowak", "Kowalski", "Wiśniewska", "Wójcik", "Kamińska", "Lewandowski", "Żak")


def write_export(path: Path, rows: int) -> None:
    """An export of ``rows`` valid lines, every login its own."""
    born = date(1950, 1, 1)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("login,pesel,first_name,last_name,email,status,roles\r\n")
        for number in range(rows):
            day = born + timedelta(days=number % 20_000)
            login = f"user{number:08d}"
            out.write(
                f"{login},{pesel(day, number // 20_000)},{GIVEN[number % 8]},"
                f"{FAMILY[number % 7]}-{number % 97},{login}@szpital{number % 50}.pl,"
                f"{'blocked' if number % 13 == 0 else 'active'},P1:LEKARZ;GABINET:ADMIN\r\n"
            )


def pesel(born: date, serial: int) -> str:
    month = born.month + (20 if born.year >= 2000 else 0)
    digits = f"{born.year % 100:02d}{month:02d}{born.day:02d}{serial % 10_000:04d}"
    check = sum(int(d) * w for d, w in zip(digits, (1, 3, 7, 9, 1, 3, 7, 9, 1, 3), strict=True))
    return digits + str((10 - check % 10) % 10)


def run(arguments: list[str], environ: dict[str, str], folder: Path) -> Run:
    """Run the command in a process of its own, timed, its peak memory taken.

    The peak and the CPU time are GNU time's (``%M``, ``%U + %S``): a child's own
    ``ru_maxrss`` would start at the resident size of the process it was forked from (this
    one, with the export's rows behind it).
    """
    measured = folder / "measured"
    command = [str(Path(sys.executable).with_name("ueoz-migration")), *arguments]
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", "-o", str(measured), *command],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed ({done.returncode}):\n{done.stderr}")
    peak, user, system = measured.read_text().split()[-3:]
    return Run(
        seconds=seconds,
        cpu_seconds=float(user) + float(system),
        megabytes=int(peak) / 1024,
        said=done.stdout.strip().splitlines()[-1],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's URL")
    parser.add_argument("--rows", type=int, default=2_000_000)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        export = Path(folder) / "eploz.csv"
        print(f"writing {options.rows:,} rows …", file=sys.stderr)
        write_export(export, options.rows)
        database = prepare_database(options.database_url, Path(folder))
        environ = {
            **os.environ,
            "APP_ENV": "bench",
            "DATABASE_URL": database.url,
            "AUDIT_KEY": AUDIT_KEY,
            "SECRET_KEY": "bench",
            "INSTANCE_DIR": str(Path(folder) / "instance"),
        }
        results = []
        try:
            for label, arguments in (
                ("new directory", ["eploz", "import", str(export)]),
                ("the same export again", ["eploz", "import", str(export)]),
                ("the command alone (`--help`)", ["eploz", "import", "--help"]),
            ):
                print(f"{label} …", file=sys.stderr)
                measured = run(arguments, environ, Path(folder))
                print(f"  {measured}", file=sys.stderr)
                results.append((label, measured))
        finally:
            database.drop()
        size = export.stat().st_size / 1e6

    print(
        f"{options.rows:,} rows, a file of {size:.0f} MB, on {database.label}; "
        f"aim: under {AIM_SECONDS} s and {AIM_MEGABYTES} MB.\n"
    )
    print("| run | time | CPU time | peak memory (RSS) | the command said |")
    print("|---|---:|---:|---:|---|")
    for label, measured in results:
        said = measured.said.replace(str(export), "FILE")
        shown = said if said.startswith("imported") else "—"
        print(
            f"| {label} | {measured.seconds:.1f} s | {measured.cpu_seconds:.1f} s "
            f"| {measured.megabytes:.0f} MB | {shown} |"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    new = results[0][1]
    met = new.seconds < AIM_SECONDS and new.megabytes < AIM_MEGABYTES
    print(
        f"\nAim for the new directory: {'met' if met else 'NOT met'} "
        f"(load average {load} at the end, on {os.cpu_count()} CPUs)."
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
