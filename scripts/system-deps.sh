#!/usr/bin/env bash
# Install the Debian packages the test suite needs: a PostgreSQL server (started on loopback by
# scripts/postgres.sh), Chromium (driven by Playwright), Graphviz (the SVG state diagram),
# nginx (the production recipe's reverse proxy, deploy/nginx/, which the slow-client test and
# `make soak` run in front of gunicorn), Node.js with npm (the interoperability test's
# relying party, tests/interop) and GNU time (a command's peak memory, for the import
# benchmark). Quick when they are already there.
set -euo pipefail
need=()
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v dot >/dev/null || need+=(graphviz)
[ -x /usr/bin/time ] || need+=(time)
fc-list 2>/dev/null | grep -qi dejavu || need+=(fonts-dejavu-core)
[ -x /usr/sbin/nginx ] || need+=(nginx)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run this script as root to install them)" >&2
    exit 1
  fi
  echo "installing ${need[*]}…"
  apt-get update -qq
  # Packages that bring a service (nginx) must not start it: the tests run their own, on
  # their own ports. policy-rc.d answers 101 (action forbidden) to the packages' scripts.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# openid-client needs Node.js 20 or later; Debian 12's own nodejs is 18 (Debian 13's is 20).
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "Node.js $(node --version) is older than 20, which tests/interop needs: install Node.js 20" \
    "or later (Debian 13's nodejs, or NodeSource's); the interoperability test fails until then." >&2
fi
