#!/usr/bin/env bash
# Install the Debian packages the test suite needs: a PostgreSQL server (started on loopback by
# scripts/postgres.sh), Chromium (driven by Playwright), Graphviz (the SVG state diagram) and GNU
# time (a command's peak memory, for the import benchmark). Quick when they are already there.
set -euo pipefail
need=()
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v dot >/dev/null || need+=(graphviz)
[ -x /usr/bin/time ] || need+=(time)
fc-list 2>/dev/null | grep -qi dejavu || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run this script as root to install them)" >&2
    exit 1
  fi
  echo "installing ${need[*]}…"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
