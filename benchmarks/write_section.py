"""Put a benchmark's fresh figures into docs/performance.md, between its markers.

    python benchmarks/write_section.py NAME FILE < figures.md

replaces what stands between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in FILE
with standard input, and stamps the date, the machine load and a reference speed (the
best of 5 timings of ``sum(range(1000))``, 14–19 µs on this machine when it is quiet), so
that tables taken on different days can be told apart by how fast the machine was; the
prose around the markers (method, analysis) stays as it was written.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path


def main() -> int:
    name, path = sys.argv[1], Path(sys.argv[2])
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start not in text or end not in text:
        print(f"{path} has no {start} … {end} markers", file=sys.stderr)
        return 1
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    reference = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000
    stamp = (
        f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` on "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, load average {load} at the end, "
        f"`sum(range(1000))` in {reference * 1e6:.1f} µs._"
    )
    figures = sys.stdin.read().strip()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    replacement = f"{start}\n{stamp}\n\n{figures}\n{end}"
    path.write_text(pattern.sub(lambda _: replacement, text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
