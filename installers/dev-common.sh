# shellcheck shell=bash disable=SC2034  # RUNTIME_PACKAGES is read by the scripts that source this
# Sourced by quickstart.sh and run-tests.sh: system packages and the project's virtual environment.
# Idempotent: installs only what is missing, so a second run is quick.

SIVR_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIVR_VENV=${SIVR_VENV:-$SIVR_REPO/.venv}
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
# shellcheck source=installers/locked-pip.sh
source "$SIVR_REPO/installers/locked-pip.sh"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing Debian packages: ${missing[*]}"
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
        if [[ " ${missing[*]} " == *" nginx "* ]]; then
            quiet_debian_nginx
        fi
    fi
}

# Debian's nginx package starts and enables its own nginx.service, a default site on port 80 that
# SIVR never uses (each instance runs its own nginx, daemons/front.py). Installed here just now, it is
# stopped and disabled; an nginx that was already on the machine is left as its administrator set it.
quiet_debian_nginx() {
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now nginx.service >/dev/null 2>&1 || true
    elif [ -s /run/nginx.pid ]; then
        $SUDO /usr/sbin/nginx -s quit >/dev/null 2>&1 || true
    fi
    echo "Debian's default nginx site (port 80) is stopped and disabled; SIVR runs its own nginx per instance"
}

# Runtime: Python venv support, nginx (the TLS/HTTP/2 front of every instance, daemons/front.py),
# Mesa EGL for the OpenGL 3D back end, and the libraries Qt needs.
RUNTIME_PACKAGES=(python3-venv nginx libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0 libfontconfig1
    libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
    libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-randr0 libxcb-xinerama0 fonts-dejavu-core)

ensure_venv() {  # ensure_venv LOCK_NAME: runtime (the daemons and the console) or test
    local lock=$1
    local python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "SIVR needs Python 3.11 or newer ($python is $($python --version))"; exit 1; }
    [ -x "$SIVR_VENV/bin/python" ] || "$python" -m venv "$SIVR_VENV"
    local stamp="$SIVR_VENV/.sivr-installed-$lock"
    if [ ! -f "$stamp" ] || [ "$SIVR_REPO/pyproject.toml" -nt "$stamp" ] \
        || [ "$SIVR_REPO/requirements/$lock.txt" -nt "$stamp" ]; then
        local log="$SIVR_VENV/pip-install.log"
        echo "Installing SIVR and its locked Python packages (requirements/$lock.txt) into $SIVR_VENV (log: $log)"
        if ! pip_install_locked "$SIVR_VENV/bin/python" "$lock" -e "$SIVR_REPO" >"$log" 2>&1; then
            tail -n 40 "$log"
            echo "pip install failed; the whole log is in $log"
            exit 1
        fi
        touch "$stamp"
    fi
}
