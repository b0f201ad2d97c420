# shellcheck shell=bash
# Sourced by dev-common.sh (quickstart, tests) and install.sh: one way to install SIVR's Python
# packages. pip takes the locked requirements (requirements/NAME.txt: exact versions, every file
# checked against its hash, the build back end included), then SIVR itself with --no-deps and
# without fetching a build back end. The locked files are PyPI's; a pip mirror configured on the
# host works as long as it serves the same files. installers/update-lock.sh rewrites the locks.

SIVR_REQUIREMENTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../requirements" && pwd)"

pip_install_locked() {  # pip_install_locked PYTHON LOCK_NAME PIP_ARGUMENTS_FOR_SIVR...
    local python=$1 lock=$2
    shift 2
    "$python" -m pip install --quiet --disable-pip-version-check --require-hashes \
        -r "$SIVR_REQUIREMENTS/$lock.txt" \
        && "$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation "$@"
}
