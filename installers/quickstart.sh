#!/usr/bin/env bash
# Quick start on a fresh Debian machine: install what is needed, then run the whole system locally
# with demo data (SQLite, self-signed TLS, a demo admin and physician, a real CT series).
set -euo pipefail
# shellcheck source=installers/dev-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/dev-common.sh"
apt_install "${RUNTIME_PACKAGES[@]}"
ensure_venv runtime
export EGL_PLATFORM=${EGL_PLATFORM:-surfaceless}
exec "$SIVR_VENV/bin/sivr" demo --state-dir "${SIVR_DEMO_DIR:-$SIVR_REPO/.sivr-demo}" "$@"
