#!/usr/bin/env bash
# `make bench`: run every benchmark and write its figures into docs/performance.md.
# PostgreSQL runs on its own server with fsync on (a durable commit), apart from the tests'.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
out=test-results/bench
mkdir -p "$out"
pg_url=$(FSYNC=on PGPORT=55433 PGDATA_DIR=/tmp/ueoz-pg-bench scripts/postgres.sh start)

run() {  # run NAME COMMAND…: keep the output, put its Markdown into the docs
  local name=$1; shift
  echo "== $name: $*"
  "$@" | tee "$out/$name.md"
  $py benchmarks/write_section.py "$name" docs/performance.md < "$out/$name.md"
}

run core $py benchmarks/bench_core.py --database-url sqlite --database-url "$pg_url" \
  --transitions 1500 --processes 2 --rounds 3 --log-rows 100000
# Anchors over a log of 1,000,000 rows: anchoring it whole, checking it against 100 anchors.
run anchors $py benchmarks/bench_anchors.py --database-url sqlite --database-url "$pg_url" \
  --log-rows 1000000 --anchors 100 --rounds 3
# The staff console's progress page and a helpdesk look-up over 1,000,000 attempts (PostgreSQL).
run console $py benchmarks/bench_console.py --database-url "$pg_url" \
  --attempts 1000000 --rounds 20 --lookups 200
# Logins per second per core: CPU time of the process, steadier than wall time on a shared machine.
run login $py benchmarks/bench_login.py --rounds 7 --clock cpu
run http-sqlite $py benchmarks/bench_http.py --database sqlite --markdown
run http-postgresql $py benchmarks/bench_http.py --database postgresql --markdown
# The same load on a web app that does nothing: the most the machine gives this design.
run http-floor $py benchmarks/bench_http_floor.py --markdown
# A national export into PostgreSQL: its time and the command's peak memory (GNU time).
run import $py benchmarks/bench_import.py --database-url "$pg_url" --rows 2000000
echo "figures written to docs/performance.md (raw output in $out/)"
