#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs test needs (Chromium, PostgreSQL, dcmtk, Xvfb, ss, the
# locked Python packages), runs the linters (installers/lint.sh), starts a private PostgreSQL
# server on loopback, and runs pytest. Extra arguments go to pytest.
set -euo pipefail
# shellcheck source=installers/dev-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-common.sh"
apt_install "${RUNTIME_PACKAGES[@]}" chromium postgresql dcmtk xvfb xauth systemd shellcheck nodejs iproute2
# Debian packages npm apart from Node.js; a Node.js that bundles its own npm needs nothing more
command -v npm >/dev/null || apt_install npm
ensure_venv test
# the built OHIF viewer for the DICOMweb browser test
bash "$SIVR_REPO/installers/install-ohif.sh"

export EGL_PLATFORM=surfaceless
export PYTHONUNBUFFERED=1
# Bytecode caches are written for this run even where the environment turns them off
# (PYTHONDONTWRITEBYTECODE, set on some CI images): every daemon the tests start imports the
# project's modules, and each pytest process rewrites every test module's asserts; without caches
# each of them compiles all of it again (0.6 s of CPU per daemon process, about 15 s per collection
# measured on a 2-core VM). The caches stay in this checkout's ignored __pycache__ folders.
unset PYTHONDONTWRITEBYTECODE

pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_dir=$(mktemp -d /tmp/sivr-pg.XXXXXX)
pg_port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
pg_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
echo "$pg_password" > "$pg_dir/pw" && [ "$(id -u)" = 0 ] && chown postgres "$pg_dir/pw"
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U sivr --pwfile="$pg_dir/pw" --auth=scram-sha-256 -E UTF8 >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c fsync=off" start >/dev/null
trap 'as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
export SIVR_TEST_PG_URL="postgresql://sivr:$pg_password@127.0.0.1:$pg_port/postgres"
# lets the fault tests restart the database server under running daemons
if [ "$(id -u)" = 0 ]; then pg_as="runuser -u postgres --"; else pg_as=""; fi
export SIVR_TEST_PG_RESTART="$pg_as $pg_bin/pg_ctl -D $pg_dir/data -l $pg_dir/log -w -m fast restart"

cd "$SIVR_REPO"
# the JavaScript checker, exact versions from installers/js/package-lock.json (integrity-checked)
npm ci --prefix installers/js --silent
# lint first: a finding fails the run before the long suite starts
PYTHON="$SIVR_VENV/bin/python" bash installers/lint.sh
# The render nodes' kernels compiled once into the package's cache, as installers/install.sh does at
# install time: the longest modules, which run first, start render nodes in their first seconds, and
# on a cold cache each node compiled them at once, past its readiness wait, on a 2-core machine.
"$SIVR_VENV/bin/python" -m daemons.render.warm
# One worker per core (at most 4): most tests wait on daemons, browsers and sockets, so one
# process left half of a 2-core machine idle. A file's tests stay on one worker (its module
# fixtures are set up once). Tests that disturb a shared service (marker `exclusive`) run alone after.
# Longest modules go first (tests/module_order.py; xdist's own reordering by test count is off;
# refresh their times with
# `--module-seconds-out tests/module_seconds.json`), so no worker ends alone on a long one.
workers=$(nproc); ((workers > 4)) && workers=4
pytest_run() {
    xvfb-run -a -s "-screen 0 1920x1080x24" \
        "$SIVR_VENV/bin/python" -m pytest -p no:cacheprovider --timeout 900 -q -rs "$@"
}
status=0
# the 15 slowest tests are listed at the end: CI has to stay well under 30 minutes on two cores
pytest_run -n "$workers" --dist loadfile --no-loadscope-reorder --durations 15 -m "not exclusive" "$@" || status=$?
# 5: no test selected (arguments that name only exclusive tests)
((status == 5)) && status=0
alone=0
pytest_run -m exclusive "$@" || alone=$?
((alone == 5)) && alone=0
((status == 0)) && status=$alone
exit "$status"
