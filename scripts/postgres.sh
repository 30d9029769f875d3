#!/usr/bin/env bash
# Start (or stop) a throw-away PostgreSQL server on loopback for the tests and benchmarks.
# Usage: scripts/postgres.sh start|stop|url   (PGPORT, PGDATA_DIR, FSYNC=on|off may be set;
# fsync is off by default: the tests need no durability, the benchmarks start one with FSYNC=on)
set -euo pipefail
port=${PGPORT:-55432}
data=${PGDATA_DIR:-/tmp/ueoz-pg-$port}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
run_as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-start}" in
  start)
    if [ -z "$bin" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    if [ ! -s "$data/PG_VERSION" ]; then
      mkdir -p "$data"; [ "$(id -u)" = 0 ] && chown postgres "$data"
      run_as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! run_as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      run_as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k /tmp -c fsync=${FSYNC:-off} -c max_connections=200" start >/dev/null
    fi
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop) run_as_postgres "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null || true ;;
  url) echo "postgresql://postgres@127.0.0.1:$port/postgres" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
