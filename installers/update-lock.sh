#!/usr/bin/env bash
# Re-resolve the locked Python requirements from pyproject.toml, with hashes, against PyPI alone:
#   requirements/runtime.txt  the daemons, the OpenGL back end and the console (install.sh, quickstart.sh)
#   requirements/test.txt     all of that plus the test and lint tools (run-tests.sh, .ci/run)
# Run it after changing a dependency in pyproject.toml and commit the result; versions already
# locked are kept where they still fit. Extra arguments go to `uv pip compile`: --upgrade moves
# everything to the newest allowed versions, --upgrade-package NAME one package.
# tests/installers/test_lock.py checks (offline) that the locks match pyproject.toml.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UV_VERSION=0.13.9

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only the public index (pip's and uv's default): a host's pip or uv configuration
# (mirrors, local wheel folders) must not leak in.
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_NO_INDEX \
    UV_INDEX UV_INDEX_URL UV_DEFAULT_INDEX UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_CONSTRAINT
export PIP_CONFIG_FILE=/dev/null
python3 -m venv "$work/uv"
"$work/uv/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"

# The build back end is locked too: the installers build SIVR with --no-build-isolation.
build_requires=$(python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' \
    "$repo/pyproject.toml")

lock() {  # lock NAME EXTRA... [-- UV_ARGUMENTS]
    local name=$1; shift
    local args=()
    while (($#)) && [[ $1 != -- ]]; do args+=(--extra "$1"); shift; done
    (($#)) && shift
    args+=("$@")
    echo "locking requirements/$name.txt (${args[*]})"
    (cd "$repo" && "$work/uv/bin/uv" pip compile --no-config --quiet \
        --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command "installers/update-lock.sh" \
        "${args[@]}" pyproject.toml - -o "requirements/$name.txt" "${UV_ARGS[@]}" <<<"$build_requires")
}
UV_ARGS=("$@")
lock runtime gl console
# the test lock is held to the runtime lock's versions: CI tests what install.sh installs
lock test gl console test -- --constraint requirements/runtime.txt
